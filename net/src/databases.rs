//! The databases a server holds: each one's tick loop, module and subscription hub.
//!
//! At start every database in the data directory is restored (snapshot, then log) and
//! its tick loop started. Publishing creates a database; publishing another module
//! into it migrates its tables in place, clients connected, when the change keeps
//! every row (see [`tickdb_engine::migrate`]), or starts it afresh when the owner asks
//! to clear its data; deleting stops its loop and removes its files.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock, mpsc};

use tickdb_engine::commitlog::LogConfig;
use tickdb_engine::commitlog::writer::LogWatch;
use tickdb_engine::store::{DataDir, DatabaseMeta, StoreError};
use tickdb_engine::{
    CallReply, Database, Durability, DurableSink, LoadedModule, Migration, ModuleHost, ModuleLogs,
    ModuleSystem, ModuleWork, ReplyTo, SnapshotPolicy, SplitMix64, SystemClock, TickHandle, TickLoop,
};
use tickdb_sql::Visibility;
use tickdb_wasm_abi::{ConnectionId, Identity, Lifecycle};

use crate::config::ServerConfig;
use crate::hub::{FanoutSink, Gate, Hub, HubConfig, HubStatus, Outgoing, Routes};

/// A running database.
#[derive(Debug)]
pub struct Served {
    pub name: String,
    pub owner: Identity,
    /// The database's record as last written: its module and table order.
    record: Mutex<DatabaseMeta>,
    /// The running module; replaced by a migration.
    module: RwLock<Arc<LoadedModule>>,
    /// The commit log's durable tick.
    watch: LogWatch,
    pub hub: Arc<Mutex<Hub>>,
    pub logs: Arc<ModuleLogs>,
    /// This run of the database: random, so that a client cannot take ticks of an
    /// earlier run (before a restart, or before the database was replaced) for this one's.
    pub epoch: u64,
    /// What the event loops read of the hub without its lock.
    pub status: Arc<HubStatus>,
    /// `None` once the database is being deleted.
    handle: RwLock<Option<TickHandle<ModuleWork>>>,
}

impl Served {
    /// Runs `f` with the database's tick loop, unless it is stopping.
    pub fn with_handle<R>(&self, f: impl FnOnce(&TickHandle<ModuleWork>) -> R) -> Result<R, ApiError> {
        let handle = self.handle.read().expect("handle lock");
        let handle = handle
            .as_ref()
            .ok_or_else(|| ApiError::not_found(format!("database `{}` was deleted", self.name)))?;
        Ok(f(handle))
    }

    pub fn is_owner(&self, who: Identity) -> bool {
        self.owner == who
    }

    /// The running module.
    pub fn module(&self) -> Arc<LoadedModule> {
        Arc::clone(&self.module.read().expect("module lock"))
    }
}

/// An HTTP-style error: a status and a message a user can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into() }
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(401, message)
    }
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(403, message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(404, message)
    }
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(409, message)
    }
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(503, message)
    }
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::InvalidName(_) => ApiError::bad_request(e.to_string()),
            StoreError::Exists(_) => ApiError::conflict(e.to_string()),
            StoreError::Module { .. } => ApiError::bad_request(e.to_string()),
            _ => ApiError::internal(e.to_string()),
        }
    }
}

/// What a publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    Created,
    /// The same module was published again: nothing changed.
    Unchanged,
    /// The data was cleared and the database started again with the new module.
    Replaced,
    /// The new module runs on the same data, its tables migrated: what changed.
    Migrated(Vec<String>),
}

/// Every database of a server; see the module docs.
#[derive(Debug)]
pub struct Databases {
    data: DataDir,
    host: Arc<ModuleHost>,
    config: ServerConfig,
    served: RwLock<BTreeMap<String, Arc<Served>>>,
    /// Serialises publishes and deletes (each may take seconds: compiling a module).
    changing: Mutex<()>,
    routes: Arc<Routes>,
}

impl Databases {
    /// Restores every database in `data` and starts its tick loop.
    pub fn open(data: DataDir, config: ServerConfig, routes: Arc<Routes>) -> Result<Databases, ApiError> {
        let host_config =
            tickdb_engine::HostConfig { cache_dir: Some(data.module_cache()), ..config.host.clone() };
        let host = ModuleHost::new(host_config).map_err(|e| ApiError::internal(e.to_string()))?;
        let host = Arc::new(host);
        let databases = Databases {
            data,
            host,
            config,
            served: RwLock::new(BTreeMap::new()),
            changing: Mutex::new(()),
            routes,
        };
        for meta in databases.data.list()? {
            let served = databases.start(&meta, false)?;
            databases.served.write().expect("served lock").insert(meta.name.clone(), served);
        }
        Ok(databases)
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    pub fn get(&self, name: &str) -> Result<Arc<Served>, ApiError> {
        let served = self.served.read().expect("served lock");
        served.get(name).cloned().ok_or_else(|| ApiError::not_found(format!("no database named `{name}`")))
    }

    pub fn list(&self) -> Vec<Arc<Served>> {
        self.served.read().expect("served lock").values().cloned().collect()
    }

    /// Restores `meta`'s database and starts its tick loop; `fresh` runs its `init`.
    fn start(&self, meta: &DatabaseMeta, fresh: bool) -> Result<Arc<Served>, ApiError> {
        let restored = self.data.restore(
            &self.host,
            meta,
            self.config.engine.clone(),
            Box::new(SystemClock),
            Box::new(SplitMix64::from_os()),
        )?;
        let module = restored.module;
        let visibility = Visibility::new(restored.ticker.db(), &module.def.visibility)
            .map_err(|e| ApiError::bad_request(format!("the module's visibility rule is invalid: {e}")))?;
        let logs = restored.ticker.system().logs();
        let name = meta.name.clone();
        let sink = DurableSink::open(
            &self.data.log(&name),
            &restored.recovered.end,
            LogConfig::default(),
            Durability::Confirmed,
        )
        .map_err(|e| ApiError::internal(format!("database `{name}`: opening its log: {e}")))?
        .with_snapshots(&self.data.snapshots(&name), &self.data.log(&name), SnapshotPolicy::default())
        .map_err(|e| ApiError::internal(format!("database `{name}`: starting its snapshots: {e}")))?;
        let watch = sink.watch();
        let epoch = u64::from_le_bytes(crate::identity::random_bytes());
        let gate = Gate::new(name.clone(), epoch, Arc::clone(&self.routes));
        let hub_config = HubConfig {
            limits: self.config.query_limits.clone(),
            slice: self.config.initial_slice.clone(),
            query_sets_max: self.config.query_sets_max,
            queries_per_set_max: self.config.queries_per_set_max,
            history_bytes_max: self.config.resume_history_bytes_max,
            history_ticks_max: self.config.resume_history_ticks_max,
            start_tick: restored.ticker.db().last_tick().unwrap_or(0),
            epoch,
        };
        let hub = Hub::new(visibility, Arc::clone(&gate), hub_config);
        let status = hub.status();
        let hub = Arc::new(Mutex::new(hub));
        let mut ticker = restored.ticker;
        ticker.system_mut().set_own_changes(Box::new(crate::hub::OwnView(Arc::clone(&hub))));
        let sink = FanoutSink { inner: sink, hub: Arc::clone(&hub), gate };
        let handle = TickLoop::spawn(ticker, sink, &self.config.engine)
            .map_err(|e| ApiError::internal(format!("database `{name}`: starting its tick loop: {e}")))?;
        if fresh {
            run_init(&handle, meta.owner)?;
        }
        Ok(Arc::new(Served {
            name: meta.name.clone(),
            owner: meta.owner,
            record: Mutex::new(restored.meta),
            module: RwLock::new(module),
            watch,
            hub,
            logs,
            epoch,
            status,
            handle: RwLock::new(Some(handle)),
        }))
    }

    /// Publishes `wasm` as database `name` for `owner`; see [`Published`].
    pub fn publish(
        &self,
        name: &str,
        owner: Identity,
        wasm: &[u8],
        clear: bool,
    ) -> Result<Published, ApiError> {
        let _changing = self.changing.lock().expect("changing lock");
        // The module is checked (compiled, described, validated) before anything is written.
        let module = self
            .host
            .load(wasm)
            .map_err(|e| ApiError::bad_request(format!("the module was refused: {e}")))?;
        let existing = self.served.read().expect("served lock").get(name).cloned();
        let outcome = match existing {
            Some(old) if !old.is_owner(owner) => {
                return Err(ApiError::forbidden(format!("database `{name}` belongs to another identity")));
            }
            Some(old) if old.module().hash == module.hash => return Ok(Published::Unchanged),
            Some(old) if !clear => return self.migrate(&old, wasm, module).map(Published::Migrated),
            Some(_) => {
                self.stop_and_delete(name)?;
                Published::Replaced
            }
            None => {
                if self.served.read().expect("served lock").len() >= self.config.databases_max {
                    let max = self.config.databases_max;
                    return Err(ApiError::conflict(format!(
                        "the server holds {max} databases already (databases_max)"
                    )));
                }
                Published::Created
            }
        };
        let meta = self.data.create(name, owner, wasm)?;
        match self.start(&meta, true) {
            Ok(served) => {
                self.served.write().expect("served lock").insert(name.to_string(), served);
                Ok(outcome)
            }
            Err(e) => {
                // Nothing of a database that could not start is kept.
                let _ = self.data.delete(name);
                Err(e)
            }
        }
    }

    /// Deletes database `name`; only its owner may.
    pub fn delete(&self, name: &str, who: Identity) -> Result<(), ApiError> {
        let _changing = self.changing.lock().expect("changing lock");
        if !self.get(name)?.is_owner(who) {
            return Err(ApiError::forbidden(format!("only the owner of `{name}` may delete it")));
        }
        self.stop_and_delete(name)
    }

    fn stop_and_delete(&self, name: &str) -> Result<(), ApiError> {
        self.stop(name, "the database was deleted".to_string());
        Ok(self.data.delete(name)?)
    }

    /// Stops database `name`'s tick loop and closes its clients' connections with `why`.
    fn stop(&self, name: &str, why: String) {
        let served = self.served.write().expect("served lock").remove(name);
        if let Some(served) = served {
            let handle = served.handle.write().expect("handle lock").take();
            if let Some(handle) = handle {
                handle.shutdown();
            }
            self.routes.deliver(vec![Outgoing::Stopped {
                database: name.to_string(),
                epoch: served.epoch,
                why,
            }]);
        }
    }

    /// Replaces `served`'s module with `module`, migrating its tables in place between
    /// two ticks; clients stay connected and get their subscriptions' rows again. The
    /// migration is written (the module, a snapshot of the migrated tables, then the
    /// record) before any tick runs on the new tables. A change that would lose rows is
    /// refused with every reason, and nothing changes.
    fn migrate(
        &self,
        served: &Arc<Served>,
        wasm: &[u8],
        module: Arc<LoadedModule>,
    ) -> Result<Vec<String>, ApiError> {
        // The visibility rules are checked against the new tables before anything changes.
        let mut scratch =
            Database::new(self.config.engine.clone()).map_err(|e| ApiError::internal(e.to_string()))?;
        for table in &module.def.tables {
            scratch.create_table(table.clone()).map_err(|e| ApiError::bad_request(e.to_string()))?;
        }
        Visibility::new(&scratch, &module.def.visibility)
            .map_err(|e| ApiError::bad_request(format!("the module's visibility rule is invalid: {e}")))?;
        let (host, data, wasm, target) =
            (Arc::clone(&self.host), self.data.clone(), wasm.to_vec(), Arc::clone(served));
        let change = move |db: &mut Database, system: &mut ModuleSystem| {
            migrate_between_ticks(db, system, &host, &data, &wasm, module, &target)
        };
        let outcome = served
            .with_handle(|h| h.exclusive(change))?
            .map_err(|e| ApiError::unavailable(format!("database `{}`: {e}", served.name)))?;
        match outcome {
            Ok(changes) => Ok(changes),
            Err(Migrate::Refused(e)) => Err(e),
            Err(Migrate::Halted(why)) => {
                let why = format!(
                    "the migration failed part way and the database stopped: {why}; restart the server to bring it back as it was"
                );
                self.stop(&served.name, why.clone());
                Err(ApiError::internal(why))
            }
        }
    }

    /// Stops every tick loop, finishing the work already queued.
    pub fn shutdown(&self) {
        for served in self.served.write().expect("served lock").values() {
            if let Some(handle) = served.handle.write().expect("handle lock").take() {
                handle.shutdown();
            }
        }
    }
}

/// Runs a new database's `init` reducer, if it has one, and waits for it.
fn run_init(handle: &TickHandle<ModuleWork>, owner: Identity) -> Result<(), ApiError> {
    let (to, reply) = mpsc::channel::<CallReply>();
    let work =
        ModuleWork::lifecycle(Lifecycle::Init, owner, ConnectionId::default(), Some(ReplyTo { id: 0, to }));
    handle.submit(work).map_err(|e| ApiError::unavailable(e.to_string()))?;
    match reply.recv() {
        Ok(CallReply { outcome: Ok(_), .. }) => Ok(()),
        Ok(CallReply { outcome: Err(e), .. }) => {
            Err(ApiError::bad_request(format!("the module's init reducer failed: {e}")))
        }
        Err(_) => Err(ApiError::internal("the database stopped while running init")),
    }
}

/// Why a migration did not happen.
enum Migrate {
    /// Nothing changed.
    Refused(ApiError),
    /// The tables in memory changed but could not be recorded: the database must stop
    /// before its log records anything of them (its files still hold it as it was).
    Halted(String),
}

/// A migration's work on the tick thread, between two ticks; see [`Databases::migrate`].
fn migrate_between_ticks(
    db: &mut Database,
    system: &mut ModuleSystem,
    host: &ModuleHost,
    data: &DataDir,
    wasm: &[u8],
    module: Arc<LoadedModule>,
    served: &Served,
) -> Result<Vec<String>, Migrate> {
    let migration = Migration::plan(db, &module.def).map_err(|e| {
        Migrate::Refused(ApiError::conflict(format!(
            "database `{}`: {e}. Publish with clear=true to delete its data and start afresh",
            served.name
        )))
    })?;
    let changes = migration.changes().to_vec();
    let tables = migration.table_order(db);
    // Every tick before is durable first: the snapshot must not run ahead of the log.
    let tick = db.last_tick().unwrap_or(0);
    served
        .watch
        .wait_durable(tick)
        .map_err(|e| Migrate::Refused(ApiError::unavailable(format!("the log failed: {e}"))))?;
    // From here the tables in memory change: whatever fails (a panic included) halts
    // the database before its log records anything of them.
    let changed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        migration.apply(db).map_err(|e| format!("migrating the tables: {e}"))?;
        system
            .replace_module(host, Arc::clone(&module), db)
            .map_err(|e| format!("starting the new module: {e}"))?;
        let visibility =
            Visibility::new(db, &module.def.visibility).map_err(|e| format!("the visibility rules: {e}"))?;
        // The migrated state is a tick of its own, so that its snapshot is not taken
        // for one of the old tables at the tick before.
        db.advance_tick();
        let (tick, snapshot) = tickdb_engine::snapshot::capture(db);
        let mut record = served.record.lock().expect("record lock");
        *record = data
            .migrate(&record, wasm, tables, tick, &snapshot)
            .map_err(|e| format!("recording the migration: {e}"))?;
        Ok::<_, String>(visibility)
    }));
    let visibility = match changed {
        Ok(Ok(visibility)) => visibility,
        Ok(Err(why)) => {
            system.halt(format!("the database is stopping: {why}"));
            return Err(Migrate::Halted(why));
        }
        Err(_) => {
            let why = "the migration panicked".to_string();
            system.halt(format!("the database is stopping: {why}"));
            return Err(Migrate::Halted(why));
        }
    };
    *served.module.write().expect("module lock") = module;
    crate::hub::lock(&served.hub).migrated(db, visibility);
    Ok(changes)
}

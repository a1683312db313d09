//! The databases a server holds: each one's tick loop, module and subscription hub.
//!
//! At start every database in the data directory is restored (snapshot, then log) and
//! its tick loop started. Publishing creates a database, or replaces its module when
//! the owner asks to clear its data; deleting stops its loop and removes its files.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock, mpsc};

use tickdb_engine::commitlog::LogConfig;
use tickdb_engine::store::{DataDir, DatabaseMeta, StoreError};
use tickdb_engine::{
    CallReply, Durability, DurableSink, LoadedModule, ModuleHost, ModuleLogs, ModuleWork, ReplyTo,
    SnapshotPolicy, SplitMix64, SystemClock, TickHandle, TickLoop,
};
use tickdb_sql::Visibility;
use tickdb_wasm_abi::{ConnectionId, Identity, Lifecycle};

use crate::config::ServerConfig;
use crate::hub::{FanoutSink, Gate, Hub, HubConfig, HubStatus, Outgoing, Routes};

/// A running database.
#[derive(Debug)]
pub struct Served {
    pub meta: DatabaseMeta,
    pub module: Arc<LoadedModule>,
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
            .ok_or_else(|| ApiError::not_found(format!("database `{}` was deleted", self.meta.name)))?;
        Ok(f(handle))
    }

    pub fn is_owner(&self, who: Identity) -> bool {
        self.meta.owner == who
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
}

/// Every database of a server; see the module docs.
#[derive(Debug)]
pub struct Databases {
    data: DataDir,
    host: ModuleHost,
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
        let sink = FanoutSink { inner: sink, hub: Arc::clone(&hub), gate };
        let handle = TickLoop::spawn(restored.ticker, sink, &self.config.engine)
            .map_err(|e| ApiError::internal(format!("database `{name}`: starting its tick loop: {e}")))?;
        if fresh {
            run_init(&handle, meta.owner)?;
        }
        Ok(Arc::new(Served {
            meta: meta.clone(),
            module,
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
            Some(old) if old.meta.module_hash == module.hash => return Ok(Published::Unchanged),
            Some(_) if !clear => {
                return Err(ApiError::conflict(format!(
                    "database `{name}` runs another module; publishing a new one in place (a schema migration) \
                     is not supported yet: publish with clear=true to delete its data and start afresh"
                )));
            }
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
        let served = self.served.write().expect("served lock").remove(name);
        if let Some(served) = served {
            let handle = served.handle.write().expect("handle lock").take();
            if let Some(handle) = handle {
                handle.shutdown();
            }
            let why = "the database was deleted".to_string();
            self.routes.deliver(vec![Outgoing::Stopped {
                database: name.to_string(),
                epoch: served.epoch,
                why,
            }]);
        }
        Ok(self.data.delete(name)?)
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

//! The module host: runs a database's WebAssembly module with wasmtime.
//!
//! One [`ModuleHost`] per server holds the wasmtime engine, the host functions and a
//! thread that advances the engine's epoch (the clock behind call deadlines).
//! [`ModuleHost::load`] validates a module, compiles it once (or loads the compiled
//! artefact from the cache directory) and reads its definition. A [`ModuleSystem`]
//! is one database's instance of a module: the [`TickSystem`](crate::tick::TickSystem)
//! that runs its reducers, tick systems and scheduled reducers as transactions in the
//! tick loop.
//!
//! Limits ([`HostConfig`]) bound every call: a deadline, a memory cap, a wasm stack
//! size, open iterators, the size of return values and messages. A call that breaks
//! one, or traps in any other way, rolls back with an error that says which, and the
//! instance is replaced, since its memory may be left inconsistent.

mod cache;
mod imports;
mod logs;
mod system;
mod tx_slot;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tickdb_wasm_abi::abi::{IMPORT_MODULE, exports};
use tickdb_wasm_abi::{ModuleDef, ModuleDefError};
use wasmtime::{ExternType, InstancePre, Linker, Module, Store};

pub use logs::{LogRecord, ModuleLogs};
pub use system::{CallError, CallReply, ModuleSystem, ModuleWork, NativeFn, OwnChanges, ReplyTo, TrapKind};

use imports::{GuestFault, HostState, Phase};

/// The largest module definition a module may describe itself with.
pub(crate) const DESCRIBE_BYTES_MAX: usize = 16 << 20;

/// Limits and settings of the module host, shared by every database on the server.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// How long one reducer call may run before it is stopped with an error.
    pub call_deadline: Duration,
    /// How often the epoch advances: the precision of the deadline.
    pub epoch_period: Duration,
    /// The most linear memory one module instance may have.
    pub memory_bytes_max: usize,
    /// The most wasm stack a call may use before it fails with a stack overflow.
    pub wasm_stack_bytes_max: usize,
    /// Iterators one call may hold open at once.
    pub iterators_max: usize,
    /// Row ids one call's open iterators may hold in all (each iterator keeps a
    /// snapshot of the rows it will return).
    pub iterator_rows_max: usize,
    /// The largest value a reducer may return.
    pub return_bytes_max: usize,
    /// The longest error message or log line kept (longer ones are cut).
    pub message_bytes_max: usize,
    /// Log lines kept per database.
    pub log_lines_max: usize,
    /// Where compiled modules are cached, so that a restart does not recompile.
    pub cache_dir: Option<PathBuf>,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            call_deadline: Duration::from_millis(250),
            epoch_period: Duration::from_millis(1),
            memory_bytes_max: 256 << 20,
            wasm_stack_bytes_max: 512 << 10,
            iterators_max: 1024,
            iterator_rows_max: 16 << 20,
            return_bytes_max: 1 << 20,
            message_bytes_max: 16 << 10,
            log_lines_max: 10_000,
            cache_dir: None,
        }
    }
}

/// The host could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("invalid host config: {0}")]
    Config(&'static str),
    #[error("cannot set up the module host: {0}")]
    Setup(String),
}

/// Why a module cannot be loaded or run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModuleError {
    #[error("not a valid WebAssembly module: {0}")]
    Invalid(String),
    #[error(
        "the module imports `{module}::{name}`; tickdb modules import only the functions of \
         `{IMPORT_MODULE}` (was it built for another tickdb version, or with wasm-bindgen?)"
    )]
    UnknownImport { module: String, name: String },
    #[error("the module does not export `{0}`; is it built with the tickdb crate?")]
    MissingExport(&'static str),
    #[error("the module's export `{name}` has the wrong type: {why}")]
    ExportType { name: String, why: String },
    #[error("the module failed while {during}: {why}")]
    Trapped { during: &'static str, why: String },
    #[error("the module did not write its definition in `{}`", exports::DESCRIBE)]
    NoDefinition,
    #[error(transparent)]
    Definition(#[from] ModuleDefError),
    #[error("the module's table `{table}` does not match the database's: {why}")]
    SchemaChanged { table: String, why: String },
    #[error(transparent)]
    Engine(#[from] crate::error::Error),
}

/// A validated, compiled module and its definition, ready to instantiate.
pub struct LoadedModule {
    /// SHA-256 of the module's bytes.
    pub hash: [u8; 32],
    pub def: ModuleDef,
    /// Whether the compiled code came from the cache.
    pub from_cache: bool,
    /// Why the compiled code could not be written to the cache, if it could not (the
    /// module loaded all the same; the next start compiles it again).
    pub cache_error: Option<String>,
    /// Time to compile (or load from the cache) and describe the module.
    pub load_time: Duration,
    pre: InstancePre<HostState>,
    /// The registration exports, in the order they are called after instantiation.
    registrations: Vec<String>,
    reducers: HashMap<String, u32>,
}

impl std::fmt::Debug for LoadedModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModule")
            .field("hash", &cache::hex(&self.hash))
            .field("def", &self.def)
            .field("from_cache", &self.from_cache)
            .finish_non_exhaustive()
    }
}

impl LoadedModule {
    /// The position of a reducer in `def.reducers`, which calls name it by.
    pub fn reducer_id(&self, name: &str) -> Option<u32> {
        self.reducers.get(name).copied()
    }

    /// A short tag of the module: its hash's first eight bytes, never 0. Calls carry
    /// it to say which module their reducer id belongs to.
    pub fn stamp(&self) -> u64 {
        u64::from_le_bytes(self.hash[..8].try_into().expect("8 bytes")).max(1)
    }
}

/// The server's module host; see the module docs.
#[derive(Debug)]
pub struct ModuleHost {
    engine: wasmtime::Engine,
    linker: Linker<HostState>,
    config: Arc<HostConfig>,
    /// Shared with every module system, so deadlines keep working while any runs.
    epoch: Arc<EpochThread>,
}

impl HostConfig {
    pub fn validate(&self) -> Result<(), HostError> {
        let checks = [
            (self.call_deadline.is_zero(), "call_deadline must not be zero"),
            (self.epoch_period.is_zero(), "epoch_period must not be zero"),
            (self.epoch_period > self.call_deadline, "epoch_period must not be longer than call_deadline"),
            (self.memory_bytes_max < 1 << 16, "memory_bytes_max must be at least one wasm page (64 KiB)"),
            (self.wasm_stack_bytes_max < 16 << 10, "wasm_stack_bytes_max must be at least 16 KiB"),
            (self.wasm_stack_bytes_max > 64 << 20, "wasm_stack_bytes_max must be at most 64 MiB"),
            (self.iterators_max == 0, "iterators_max must be at least 1"),
            (self.iterator_rows_max == 0, "iterator_rows_max must be at least 1"),
            (self.log_lines_max == 0, "log_lines_max must be at least 1"),
        ];
        match checks.into_iter().find(|(bad, _)| *bad) {
            Some((_, why)) => Err(HostError::Config(why)),
            None => Ok(()),
        }
    }

    /// Epoch ticks in one call deadline, rounded up, plus one: the epoch may advance
    /// just after a call starts.
    fn deadline_ticks(&self) -> u64 {
        let ticks = self.call_deadline.as_nanos().div_ceil(self.epoch_period.as_nanos());
        u64::try_from(ticks).unwrap_or(u64::MAX - 1) + 1
    }
}

impl ModuleHost {
    pub fn new(config: HostConfig) -> Result<ModuleHost, HostError> {
        config.validate()?;
        let mut wasm = wasmtime::Config::new();
        wasm.epoch_interruption(true)
            .max_wasm_stack(config.wasm_stack_bytes_max)
            .cranelift_opt_level(wasmtime::OptLevel::Speed);
        let engine = wasmtime::Engine::new(&wasm).map_err(|e| HostError::Setup(e.to_string()))?;
        let linker = imports::linker(&engine)?;
        let epoch = Arc::new(EpochThread::start(engine.clone(), config.epoch_period)?);
        Ok(ModuleHost { engine, linker, config: Arc::new(config), epoch })
    }

    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    /// Validates and compiles `wasm` (or loads it from the cache), then instantiates it
    /// once to read and check its definition.
    pub fn load(&self, wasm: &[u8]) -> Result<Arc<LoadedModule>, ModuleError> {
        let started = Instant::now();
        let hash = cache::sha256(wasm);
        let compiled = cache::compile(&self.engine, self.config.cache_dir.as_deref(), &hash, wasm)?;
        let (module, from_cache, cache_error) = (compiled.module, compiled.from_cache, compiled.cache_error);
        check_imports(&module)?;
        let registrations = check_exports(&module)?;
        let pre = self.linker.instantiate_pre(&module).map_err(|e| ModuleError::Invalid(e.to_string()))?;
        let mut loaded = LoadedModule {
            hash,
            def: ModuleDef::default(),
            from_cache,
            cache_error,
            load_time: Duration::ZERO,
            pre,
            registrations,
            reducers: HashMap::new(),
        };
        let logs = Arc::new(ModuleLogs::new(16));
        let mut instance = Instance::new(self, &loaded, logs)?;
        loaded.def = instance.describe(self)?;
        loaded.def.validate()?;
        loaded.reducers =
            loaded.def.reducers.iter().enumerate().map(|(i, r)| (r.name.clone(), i as u32)).collect();
        loaded.load_time = started.elapsed();
        Ok(Arc::new(loaded))
    }
}

fn check_imports(module: &Module) -> Result<(), ModuleError> {
    for import in module.imports() {
        if import.module() != IMPORT_MODULE {
            let (module, name) = (import.module().to_string(), import.name().to_string());
            return Err(ModuleError::UnknownImport { module, name });
        }
    }
    Ok(())
}

/// Checks the required exports and returns the registration exports, sorted.
fn check_exports(module: &Module) -> Result<Vec<String>, ModuleError> {
    let func = |name: &'static str, params: usize, results: usize| -> Result<(), ModuleError> {
        match module.get_export(name) {
            Some(ExternType::Func(f)) if f.params().len() == params && f.results().len() == results => Ok(()),
            Some(_) => Err(ModuleError::ExportType {
                name: name.into(),
                why: format!("expected a function of {params} parameters and {results} results"),
            }),
            None => Err(ModuleError::MissingExport(name)),
        }
    };
    func(exports::DESCRIBE, 0, 0)?;
    func(exports::CALL_REDUCER, 2, 1)?;
    if !matches!(module.get_export(exports::MEMORY), Some(ExternType::Memory(_))) {
        return Err(ModuleError::MissingExport(exports::MEMORY));
    }
    let mut registrations = Vec::new();
    for export in module.exports() {
        if export.name().starts_with(exports::REGISTER_PREFIX) {
            match export.ty() {
                ExternType::Func(f) if f.params().len() == 0 && f.results().len() == 0 => {}
                _ => {
                    let why = "registration exports take and return nothing".into();
                    return Err(ModuleError::ExportType { name: export.name().into(), why });
                }
            }
            registrations.push(export.name().to_string());
        }
    }
    registrations.sort();
    Ok(registrations)
}

/// One live instance of a module, in its own store.
struct Instance {
    store: Store<HostState>,
    call: wasmtime::TypedFunc<(u32, u32), i32>,
    describe: wasmtime::TypedFunc<(), ()>,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance").finish_non_exhaustive()
    }
}

impl Instance {
    /// Instantiates the module and runs its registrations.
    fn new(host: &ModuleHost, module: &LoadedModule, logs: Arc<ModuleLogs>) -> Result<Instance, ModuleError> {
        Instance::with_engine(&host.engine, &host.config, module, logs)
    }

    fn with_engine(
        engine: &wasmtime::Engine,
        config: &Arc<HostConfig>,
        module: &LoadedModule,
        logs: Arc<ModuleLogs>,
    ) -> Result<Instance, ModuleError> {
        let mut store = Store::new(engine, HostState::new(Arc::clone(config), logs));
        store.limiter(|state| &mut state.env.limits);
        store.set_epoch_deadline(config.deadline_ticks());
        let instance = module.pre.instantiate(&mut store).map_err(|e| ModuleError::Trapped {
            during: "instantiating",
            why: trap_message(&e, None, config),
        })?;
        store.data_mut().memory = instance.get_memory(&mut store, exports::MEMORY);
        let export_type = |name: &str, e: wasmtime::Error| ModuleError::ExportType {
            name: name.into(),
            why: e.to_string(),
        };
        let call = instance
            .get_typed_func(&mut store, exports::CALL_REDUCER)
            .map_err(|e| export_type(exports::CALL_REDUCER, e))?;
        let describe = instance
            .get_typed_func(&mut store, exports::DESCRIBE)
            .map_err(|e| export_type(exports::DESCRIBE, e))?;
        for name in &module.registrations {
            let register: wasmtime::TypedFunc<(), ()> = instance
                .get_typed_func(&mut store, name)
                .map_err(|e| ModuleError::ExportType { name: name.clone(), why: e.to_string() })?;
            store.set_epoch_deadline(config.deadline_ticks());
            register.call(&mut store, ()).map_err(|e| ModuleError::Trapped {
                during: "registering its tables and reducers",
                why: trap_message(&e, store.data_mut().env.error.take().as_deref(), config),
            })?;
        }
        Ok(Instance { store, call, describe })
    }

    fn describe(&mut self, host: &ModuleHost) -> Result<ModuleDef, ModuleError> {
        self.store.data_mut().env.phase = Phase::Describe;
        self.store.set_epoch_deadline(host.config.deadline_ticks());
        let result = self.describe.call(&mut self.store, ());
        let env = &mut self.store.data_mut().env;
        env.phase = Phase::Idle;
        let panic = env.error.take();
        result.map_err(|e| ModuleError::Trapped {
            during: "describing itself",
            why: trap_message(&e, panic.as_deref(), &host.config),
        })?;
        let bytes = env.describe.take().ok_or(ModuleError::NoDefinition)?;
        Ok(ModuleDef::decode(&bytes)?)
    }
}

/// Says what a trap means, in the terms of the limit it broke.
fn trap_message(error: &wasmtime::Error, panic: Option<&str>, config: &HostConfig) -> String {
    if let Some(limit) = error.downcast_ref::<imports::MemoryLimitHit>() {
        return format!("out of memory: {limit}");
    }
    if let Some(fault) = error.downcast_ref::<GuestFault>() {
        return format!("ABI violation: {fault}");
    }
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => {
            format!("the call ran past its deadline of {} ms and was stopped", config.call_deadline.as_millis())
        }
        Some(wasmtime::Trap::StackOverflow) => {
            format!("stack overflow: the call used more than {} KiB of wasm stack", config.wasm_stack_bytes_max >> 10)
        }
        Some(wasmtime::Trap::UnreachableCodeReached) if panic.is_some() => {
            format!("the reducer panicked: {}", panic.unwrap_or_default())
        }
        Some(wasmtime::Trap::MemoryOutOfBounds) => "the module trapped: out of bounds memory access (a bad \
            pointer in the module, or its shadow stack in linear memory overflowed: deep recursion with large \
            locals)"
            .into(),
        Some(trap) => format!("the module trapped: {trap}"),
        None => format!("the module failed: {error}"),
    }
}

/// The thread that advances the engine's epoch every `epoch_period`.
#[derive(Debug)]
struct EpochThread {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochThread {
    fn start(engine: wasmtime::Engine, period: Duration) -> Result<EpochThread, HostError> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("tickdb-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::park_timeout(period);
                    engine.increment_epoch();
                }
            })
            .map_err(|e| HostError::Setup(format!("starting the epoch thread: {e}")))?;
        Ok(EpochThread { stop, thread: Some(thread) })
    }
}

impl Drop for EpochThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

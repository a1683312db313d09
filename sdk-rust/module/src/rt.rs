//! The module runtime: the registry the macros fill, the two exports the host calls,
//! the reducer context, the logger and the panic hook. Items marked hidden are for
//! the macros' generated code, not for module authors.

use std::cell::{Cell, RefCell};
use std::fmt::Display;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use tickdb_wasm_abi::abi::{CALL_HEADER_BYTES, call_result, level};
pub use tickdb_wasm_abi::{
    ConnectionId, Identity, Lifecycle, ModuleDef, ProductType, Reader, ReducerDef, ScheduleDef, SchemaError,
    TableSchema, TickSystemDef, TimeDuration, Timestamp, ValueType,
};

use crate::Type;
use crate::sys;

/// What a reducer's generated wrapper does with the call's arguments.
#[doc(hidden)]
pub type ReducerFn = fn(&ReducerContext, &mut Reader<'_>) -> Result<Option<Vec<u8>>, String>;

struct Registry {
    tables: Vec<TableSchema>,
    reducers: Vec<(ReducerDef, ReducerFn)>,
    schedules: Vec<ScheduleDef>,
    tick_systems: Vec<TickSystemDef>,
    visibility: Vec<String>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    tables: Vec::new(),
    reducers: Vec::new(),
    schedules: Vec::new(),
    tick_systems: Vec::new(),
    visibility: Vec::new(),
});

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    // A panic while registering aborts the instance, so the lock is never poisoned
    // in a way that matters; take it either way.
    REGISTRY.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn setup() {
    static DONE: AtomicU32 = AtomicU32::new(0);
    if DONE.swap(1, Ordering::Relaxed) == 0 {
        std::panic::set_hook(Box::new(|info| {
            let message = match info.payload().downcast_ref::<&str>() {
                Some(s) => (*s).to_string(),
                None => info.payload().downcast_ref::<String>().cloned().unwrap_or_else(|| "panic".into()),
            };
            let message = match info.location() {
                Some(at) => format!("{message} (at {}:{})", at.file(), at.line()),
                None => message,
            };
            sys::call_error(&message);
            sys::log(level::ERROR, "panic", &message);
        }));
        // Fails only if a logger is already set, which is then the module's choice.
        let _ = log::set_logger(&HostLogger);
        log::set_max_level(log::LevelFilter::Trace);
    }
}

#[doc(hidden)]
pub fn register_table(schema: Result<TableSchema, SchemaError>, schedule: Option<(&str, &str)>) {
    setup();
    let schema = schema.unwrap_or_else(|e| panic!("{e}"));
    let mut r = registry();
    if let Some((reducer, at_column)) = schedule {
        let (table, at_column, reducer) = (schema.name.clone(), at_column.into(), reducer.into());
        r.schedules.push(ScheduleDef { table, at_column, reducer });
    }
    r.tables.push(schema);
}

#[doc(hidden)]
pub fn register_reducer(
    name: &str,
    params: Vec<(&str, ValueType)>,
    returns: ValueType,
    lifecycle: Option<Lifecycle>,
    run: ReducerFn,
) {
    setup();
    let params = ProductType::new(params);
    registry().reducers.push((ReducerDef { name: name.into(), params, returns, lifecycle }, run));
}

#[doc(hidden)]
pub fn register_tick(name: &str, hz: u32, batch_calls: bool, returns: ValueType, run: ReducerFn) {
    register_reducer(name, Vec::new(), returns, None, run);
    registry().tick_systems.push(TickSystemDef { reducer: name.into(), hz, batch_calls });
}

#[doc(hidden)]
pub fn register_visibility(rule: &str) {
    setup();
    registry().visibility.push(rule.into());
}

/// Reads one argument for a reducer's generated wrapper.
#[doc(hidden)]
pub fn arg<T: Type>(r: &mut Reader<'_>, name: &str) -> Result<T, String> {
    T::decode(r).map_err(|e| format!("argument `{name}`: {e}"))
}

/// The host reads the module definition through this export.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
extern "C" fn __describe_module__() {
    let r = registry();
    let def = ModuleDef {
        tables: r.tables.clone(),
        reducers: r.reducers.iter().map(|(def, _)| def.clone()).collect(),
        schedules: r.schedules.clone(),
        tick_systems: r.tick_systems.clone(),
        visibility: r.visibility.clone(),
    };
    sys::describe_write(&def.encode());
}

thread_local! {
    static INPUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The host runs every reducer call through this export.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
extern "C" fn __call_reducer__(reducer: u32, args_len: u32) -> i32 {
    let run = registry().reducers.get(reducer as usize).map(|(_, run)| *run);
    let Some(run) = run else {
        sys::call_error(&format!("this module has no reducer {reducer}"));
        return call_result::ERR;
    };
    let mut input = INPUT.with_borrow_mut(std::mem::take);
    input.resize(CALL_HEADER_BYTES + args_len as usize, 0);
    if let Err(e) = sys::call_args_read(&mut input) {
        sys::call_error(&format!("reading the call's arguments: {}", e.name()));
        return call_result::ERR;
    }
    let (header, args) = input.split_at(CALL_HEADER_BYTES);
    let word = |at: usize| i64::from_le_bytes(header[at..at + 8].try_into().expect("8 bytes"));
    let connection = ConnectionId(header[32..48].try_into().expect("16 bytes"));
    let ctx = ReducerContext {
        sender: Identity(header[..32].try_into().expect("32 bytes")),
        connection_id: (connection.0 != [0; 16]).then_some(connection),
        timestamp: Timestamp::from_micros(word(48)),
        db: Local { _private: () },
        rng: Rng::new(word(56) as u64),
        delta: TimeDuration::from_micros(word(64)),
    };
    let outcome = run(&ctx, &mut Reader::new(args));
    INPUT.with_borrow_mut(|spare| *spare = input);
    match outcome {
        Ok(value) => {
            if let Some(value) = value
                && let Err(e) = sys::call_return(&value)
            {
                sys::call_error(&format!("returning the reducer's value: {}", sys::last_error()));
                let _ = e;
                return call_result::ERR;
            }
            call_result::OK
        }
        Err(message) => {
            sys::call_error(&message);
            call_result::ERR
        }
    }
}

/// What a reducer may return: `()`, or `Result<T, E>` with `T` a [`Type`] (whose value
/// reaches the caller) and `E` anything that displays (the caller's error message).
pub trait ReducerResult {
    #[doc(hidden)]
    fn return_type() -> ValueType;
    #[doc(hidden)]
    fn into_outcome(self) -> Result<Option<Vec<u8>>, String>;
}

impl ReducerResult for () {
    fn return_type() -> ValueType {
        ValueType::unit()
    }
    fn into_outcome(self) -> Result<Option<Vec<u8>>, String> {
        Ok(None)
    }
}

impl<T: Type, E: Display> ReducerResult for Result<T, E> {
    fn return_type() -> ValueType {
        T::value_type()
    }
    fn into_outcome(self) -> Result<Option<Vec<u8>>, String> {
        match self {
            Ok(value) => {
                let bytes = value.to_bytes();
                Ok((!bytes.is_empty()).then_some(bytes))
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

/// The database as reducers see it: each table is a method, added by `#[table]`
/// (bring the table's accessor trait into scope to use it).
#[derive(Debug)]
pub struct Local {
    _private: (),
}

/// What a reducer knows about its call.
#[derive(Debug)]
pub struct ReducerContext {
    /// Who called: the client's identity, or the database's own for tick systems and
    /// scheduled reducers.
    pub sender: Identity,
    /// The caller's connection; `None` for calls the host makes itself.
    pub connection_id: Option<ConnectionId>,
    /// The time of the tick the call runs in: the same for every call of the tick.
    pub timestamp: Timestamp,
    /// The tables.
    pub db: Local,
    rng: Rng,
    delta: TimeDuration,
}

impl ReducerContext {
    /// Random numbers for this call, seeded by the host (deterministic in replays).
    pub fn rng(&self) -> &Rng {
        &self.rng
    }

    /// For tick systems: the time since the system's previous run (zero the first time).
    pub fn delta_time(&self) -> TimeDuration {
        self.delta
    }
}

/// A small, fast random number generator (xorshift64*), seeded per call by the host.
#[derive(Debug)]
pub struct Rng {
    state: Cell<u64>,
}

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng { state: Cell::new(seed | 1) }
    }

    pub fn next_u64(&self) -> u64 {
        let mut x = self.state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn next_u32(&self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// A float in `[0, 1)`.
    pub fn next_f64(&self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A float in `[0, 1)`.
    pub fn next_f32(&self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u32 << 24) as f32
    }

    /// An integer in `[low, high)`; `low` if the range is empty.
    pub fn gen_range(&self, range: std::ops::Range<i64>) -> i64 {
        let span = range.end.wrapping_sub(range.start) as u64;
        if range.end <= range.start {
            return range.start;
        }
        // Multiply-shift: unbiased enough for games, and branch-free.
        range.start.wrapping_add(((u128::from(self.next_u64()) * u128::from(span)) >> 64) as i64)
    }
}

/// Sends the `log` crate's records to the host, which adds the reducer and time.
struct HostLogger;

impl log::Log for HostLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let message = record.args().to_string();
        sys::log(record.level() as u32, record.target(), &message);
    }

    fn flush(&self) {}
}

/// A table's id, looked up by name on first use in each instance.
#[doc(hidden)]
#[derive(Debug)]
pub struct TableRef {
    pub name: &'static str,
    id: AtomicU32,
}

const UNKNOWN: u32 = u32::MAX;

impl TableRef {
    pub const fn new(name: &'static str) -> TableRef {
        TableRef { name, id: AtomicU32::new(UNKNOWN) }
    }

    pub fn id(&self) -> u32 {
        match self.id.load(Ordering::Relaxed) {
            UNKNOWN => {
                let id = sys::table_id(self.name)
                    .unwrap_or_else(|_| panic!("table `{}`: {}", self.name, sys::last_error()));
                self.id.store(id, Ordering::Relaxed);
                id
            }
            id => id,
        }
    }
}

/// An index's id, looked up by name on first use in each instance.
#[doc(hidden)]
#[derive(Debug)]
pub struct IndexRef {
    pub table: &'static TableRef,
    pub name: &'static str,
    id: AtomicU32,
}

impl IndexRef {
    pub const fn new(table: &'static TableRef, name: &'static str) -> IndexRef {
        IndexRef { table, name, id: AtomicU32::new(UNKNOWN) }
    }

    pub fn id(&self) -> u32 {
        match self.id.load(Ordering::Relaxed) {
            UNKNOWN => {
                let id = sys::index_id(self.table.id(), self.name)
                    .unwrap_or_else(|_| panic!("index `{}`: {}", self.name, sys::last_error()));
                self.id.store(id, Ordering::Relaxed);
                id
            }
            id => id,
        }
    }
}

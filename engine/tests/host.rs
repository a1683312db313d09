//! The module host end to end: modules built from Rust with the SDK, loaded, described,
//! and called as transactions through the tick loop, with no network. Most tests
//! drive a [`Ticker`] directly with a manual clock, so ticks, tick systems and
//! schedules run exactly when the test says; one runs the threaded loop.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, mpsc};

use tickdb::Type;
use tickdb_engine::host::TrapKind;
use tickdb_engine::{
    CallError, CallReply, Clock, Database, EngineConfig, HostConfig, LoadedModule, ModuleError, ModuleHost,
    ModuleLogs, ModuleSystem, ModuleWork, ReplyTo, SplitMix64, SystemClock, TickLoop, TickOutput, Ticker,
};
use tickdb_test_modules::wasm;
use tickdb_wasm_abi::{ColId, ConnectionId, Identity, Lifecycle, Timestamp, Value, decode_exact};

/// A clock the test moves by hand.
#[derive(Clone, Default)]
struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    fn advance_micros(&self, micros: i64) {
        self.0.fetch_add(micros, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&mut self) -> Timestamp {
        Timestamp::from_micros(self.0.load(Ordering::SeqCst))
    }
}

const OWNER: Identity = Identity([9; 32]);
const ALICE: Identity = Identity([1; 32]);
const BOB: Identity = Identity([2; 32]);
const CONN: ConnectionId = ConnectionId([7; 16]);

struct Harness {
    ticker: Ticker<ModuleSystem>,
    clock: ManualClock,
    module: Arc<LoadedModule>,
    logs: Arc<ModuleLogs>,
    replies: mpsc::Receiver<CallReply>,
    reply_to: mpsc::Sender<CallReply>,
    next_id: u64,
}

impl Harness {
    fn new(package: &str, config: HostConfig, engine: EngineConfig) -> Harness {
        let host = ModuleHost::new(config).expect("host starts");
        let module = host.load(&wasm(package)).unwrap_or_else(|e| panic!("{package} loads: {e}"));
        let mut db = Database::new(engine).expect("valid config");
        let system =
            ModuleSystem::new(&host, Arc::clone(&module), &mut db, OWNER).expect("module instantiates");
        let logs = system.logs();
        let clock = ManualClock::default();
        clock.advance_micros(1_700_000_000_000_000);
        let ticker = Ticker::new(db, system, Box::new(clock.clone()), Box::new(SplitMix64::new(42)));
        let (reply_to, replies) = mpsc::channel();
        Harness { ticker, clock, module, logs, replies, reply_to, next_id: 0 }
    }

    fn start(package: &str) -> Harness {
        Harness::new(package, HostConfig::default(), EngineConfig::default())
    }

    fn work(&mut self, reducer: &str, caller: Identity, args: &[u8]) -> (u64, ModuleWork) {
        let id = self.module.reducer_id(reducer).unwrap_or_else(|| panic!("no reducer {reducer}"));
        self.next_id += 1;
        let reply = ReplyTo { id: self.next_id, to: self.reply_to.clone() };
        (self.next_id, ModuleWork::call(id, caller, CONN, args, Some(reply)))
    }

    /// Runs one tick with these calls and returns their outcomes, in order.
    fn tick(
        &mut self,
        calls: Vec<(&str, Identity, Vec<u8>)>,
    ) -> (TickOutput, Vec<Result<Vec<u8>, CallError>>) {
        let works: Vec<_> = calls.iter().map(|(r, who, args)| self.work(r, *who, args)).collect();
        let ids: Vec<u64> = works.iter().map(|(id, _)| *id).collect();
        let output = self.ticker.run_tick(works.into_iter().map(|(_, w)| w), false);
        let mut replies: Vec<CallReply> = self.replies.try_iter().collect();
        assert_eq!(replies.len(), ids.len(), "every call is answered after its tick");
        replies.sort_by_key(|r| ids.iter().position(|id| *id == r.id));
        assert!(replies.iter().all(|r| r.tick == output.tick));
        (output, replies.into_iter().map(|r| r.outcome).collect())
    }

    fn call(&mut self, reducer: &str, caller: Identity, args: Vec<u8>) -> Result<Vec<u8>, CallError> {
        self.tick(vec![(reducer, caller, args)]).1.pop().expect("one outcome")
    }

    fn lifecycle(&mut self, which: Lifecycle, caller: Identity) -> Result<Vec<u8>, CallError> {
        self.next_id += 1;
        let reply = ReplyTo { id: self.next_id, to: self.reply_to.clone() };
        self.ticker.run_tick([ModuleWork::lifecycle(which, caller, CONN, Some(reply))], false);
        self.replies.try_recv().expect("answered").outcome
    }

    fn rows(&self, table: &str) -> Vec<Vec<Value>> {
        let db = self.ticker.db();
        let t = db.table(db.table_id(table).expect("table exists"));
        t.iter().map(|r| r.to_values()).collect()
    }

    fn returned(&self, reducer: &str, bytes: &[u8]) -> Value {
        let ty = &self.module.def.reducers[self.module.reducer_id(reducer).unwrap() as usize].returns;
        decode_exact(ty, bytes).expect("the return value decodes as the declared type")
    }
}

fn enc<T: Type>(value: T) -> Vec<u8> {
    value.to_bytes()
}

fn s(text: &str) -> String {
    text.to_string()
}

fn failed(outcome: Result<Vec<u8>, CallError>) -> String {
    match outcome {
        Err(CallError::Failed(message)) => message,
        other => panic!("expected the reducer to fail, got {other:?}"),
    }
}

fn trapped(outcome: Result<Vec<u8>, CallError>) -> (TrapKind, String) {
    match outcome {
        Err(CallError::Trapped { kind, why, .. }) => (kind, why),
        other => panic!("expected a trap, got {other:?}"),
    }
}

/// The quickstart chat module: connect, name yourself, chat, disconnect.
#[test]
fn chat_module_runs_its_reducers() {
    let mut h = Harness::start("tickdb-example-chat");
    let names: Vec<&str> = h.module.def.tables.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["message", "user"]);

    assert_eq!(h.lifecycle(Lifecycle::ClientConnected, ALICE), Ok(vec![]));
    assert_eq!(h.rows("user"), vec![vec![Value::Identity(ALICE), Value::Option(None), Value::Bool(true)]]);

    assert_eq!(h.call("set_name", ALICE, enc(s("  alice "))), Ok(vec![]));
    assert_eq!(failed(h.call("set_name", ALICE, enc(s("   ")))), "names must not be empty");
    assert_eq!(failed(h.call("set_name", BOB, enc(s("bob")))), "cannot set the name of an unknown user");
    let user = &h.rows("user")[0];
    assert_eq!(user[1], Value::Option(Some(Box::new(Value::string("alice")))));

    assert_eq!(h.call("send_message", ALICE, enc(s("hello"))), Ok(vec![]));
    assert_eq!(failed(h.call("send_message", ALICE, enc(s("")))), "messages must not be empty");
    assert_eq!(failed(h.call("send_message", BOB, enc(s("hi")))), "connect before sending messages");
    let messages = h.rows("message");
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0][0], Value::Identity(ALICE));
    assert_eq!(messages[0][2], Value::string("hello"));

    assert_eq!(h.lifecycle(Lifecycle::ClientDisconnected, ALICE), Ok(vec![]));
    assert_eq!(h.rows("user")[0][2], Value::Bool(false));
    let logged = h.logs.recent(10);
    assert!(
        logged
            .iter()
            .any(|l| l.message.ends_with("is now called alice") && l.reducer.as_deref() == Some("set_name")),
        "{logged:?}"
    );
}

/// Calls with the wrong arguments, or to reducers that do not exist, fail before the
/// module runs, with an error that names the argument.
#[test]
fn bad_calls_are_refused_with_clear_errors() {
    let mut h = Harness::start("tickdb-example-chat");
    h.lifecycle(Lifecycle::ClientConnected, ALICE).unwrap();
    match h.call("set_name", ALICE, enc(7u8)) {
        Err(CallError::InvalidArguments { reducer, why }) => {
            assert_eq!(reducer, "set_name");
            assert!(why.contains("`name`"), "{why}");
        }
        other => panic!("expected invalid arguments, got {other:?}"),
    }
    match h.call("set_name", ALICE, enc((s("x"), 1u32))) {
        Err(CallError::InvalidArguments { why, .. }) => {
            assert!(why.contains("after the last argument"), "{why}")
        }
        other => panic!("expected invalid arguments, got {other:?}"),
    }
    let reply = ReplyTo { id: 99, to: h.reply_to.clone() };
    h.ticker.run_tick([ModuleWork::call(1000, ALICE, CONN, &[], Some(reply))], false);
    assert!(matches!(h.replies.try_recv().unwrap().outcome, Err(CallError::NoSuchReducer(_))));
    // Nothing above changed the database.
    assert_eq!(h.rows("user")[0][1], Value::Option(None));
}

/// Lookups through unique columns and btree indexes (ranges, prefixes, whole keys),
/// user structs and enums, auto-inc, return values and unique violations.
#[test]
fn tables_and_indexes_through_the_sdk() {
    let mut h = Harness::start("tickdb-test-features");
    // `init` ran? Not yet: it runs when the database is first published.
    assert!(h.rows("config").is_empty());
    assert_eq!(h.lifecycle(Lifecycle::Init, OWNER), Ok(vec![]));
    assert_eq!(h.rows("config"), vec![vec![Value::string("initialized"), Value::U64(1)]]);

    // create_hero(name, level, zone, class): Class is Warrior | Mage { mana } | Rogue(u8).
    let hero = |name: &str, level: u32, zone: u32, class: Vec<u8>| {
        let mut args = enc((s(name), level, zone));
        args.extend(class);
        args
    };
    let warrior = vec![0u8];
    let mut mage = vec![1u8];
    mage.extend(enc(50u32));
    let (_, outcomes) = h.tick(vec![
        ("create_hero", ALICE, hero("ayla", 3, 1, warrior.clone())),
        ("create_hero", ALICE, hero("brann", 7, 1, mage)),
        ("create_hero", BOB, hero("cora", 5, 2, vec![2, 9])),
        ("create_hero", BOB, hero("dax", 7, 1, warrior.clone())),
    ]);
    let ids: Vec<Value> = outcomes
        .iter()
        .map(|o| match h.returned("create_hero", o.as_ref().expect("created")) {
            Value::Product(fields) => fields[0].clone(),
            other => panic!("a hero is a struct, got {other}"),
        })
        .collect();
    assert_eq!(ids, [Value::U64(1), Value::U64(2), Value::U64(3), Value::U64(4)]);
    let err = failed(h.call("create_hero", BOB, hero("ayla", 1, 1, warrior)));
    assert!(err.contains("unique") && err.contains("ayla"), "{err}");

    let names = |v: Value| match v {
        Value::Array(items) => items.into_iter().map(|i| i.to_string()).collect::<Vec<_>>(),
        other => panic!("expected names, got {other}"),
    };
    let between = h.call("levels_between", ALICE, enc((4u32, 8u32))).unwrap();
    let between = names(h.returned("levels_between", &between));
    assert_eq!(between[0], "\"cora\"");
    assert_eq!(between.len(), 3, "levels 5, 7 and 7");
    let zone1 = h.call("in_zone", ALICE, enc((1u32, None::<u32>))).unwrap();
    assert_eq!(names(h.returned("in_zone", &zone1)), ["\"ayla\"", "\"brann\"", "\"dax\""]);
    let zone1_level7 = h.call("in_zone", ALICE, enc((1u32, Some(7u32)))).unwrap();
    assert_eq!(names(h.returned("in_zone", &zone1_level7)), ["\"brann\"", "\"dax\""]);

    let total = h.call("total_levels", ALICE, vec![]).unwrap();
    assert_eq!(h.returned("total_levels", &total), Value::U64(3 + 7 + 5 + 7));

    // Only the owner may move a hero; the struct argument arrives intact.
    let to = enc((3u64, 1.5f32, -2.0f32));
    assert_eq!(failed(h.call("move_hero", ALICE, to.clone())), "not your hero");
    assert_eq!(h.call("move_hero", BOB, to), Ok(vec![]));
    let cora = h.rows("hero").into_iter().find(|r| r[1] == Value::string("cora")).unwrap();
    assert_eq!(cora[6], Value::Product(vec![Value::F32(1.5), Value::F32(-2.0)]));
    assert_eq!(cora[5], Value::Sum { tag: 2, value: Box::new(Value::U8(9)) });

    // An update that clashes with another unique value fails and changes nothing.
    let err = failed(h.call("rename", ALICE, enc((1u64, s("brann")))));
    assert!(err.contains("unique"), "{err}");
    assert_eq!(h.call("rename", ALICE, enc((1u64, s("ayla the bold")))), Ok(vec![]));

    let culled = h.call("cull", ALICE, enc(6u32)).unwrap();
    assert_eq!(h.returned("cull", &culled), Value::U64(2), "levels 3 and 5");
    let deleted = h.call("delete_hero", ALICE, enc(s("dax"))).unwrap();
    assert_eq!(h.returned("delete_hero", &deleted), Value::Bool(true));
    let deleted = h.call("delete_hero", ALICE, enc(s("dax"))).unwrap();
    assert_eq!(h.returned("delete_hero", &deleted), Value::Bool(false));
    let count = h.call("hero_count", ALICE, vec![]).unwrap();
    assert_eq!(h.returned("hero_count", &count), Value::U64(1));
    assert_eq!(h.rows("hero").len(), 1);
}

/// `client_connected` returning `Err` refuses the client, and its writes roll back.
#[test]
fn client_connected_can_refuse() {
    let mut h = Harness::start("tickdb-test-features");
    assert_eq!(h.lifecycle(Lifecycle::ClientConnected, ALICE), Ok(vec![]));
    assert_eq!(h.rows("event").len(), 1);
    h.call("set_config", OWNER, enc((s("banned"), 1u64))).unwrap();
    assert_eq!(failed(h.lifecycle(Lifecycle::ClientConnected, BOB)), "the server is closed");
    assert_eq!(h.rows("event").len(), 1);
    // Deleting by row value: a row with another value is not deleted.
    let deleted = h.call("delete_config", OWNER, enc((s("banned"), 2u64))).unwrap();
    assert_eq!(h.returned("delete_config", &deleted), Value::Bool(false));
    let deleted = h.call("delete_config", OWNER, enc((s("banned"), 1u64))).unwrap();
    assert_eq!(h.returned("delete_config", &deleted), Value::Bool(true));
    assert_eq!(h.lifecycle(Lifecycle::ClientConnected, BOB), Ok(vec![]));
}

/// Seeds come from the tick's entropy: different calls get different numbers.
#[test]
fn reducers_get_random_seeds() {
    let mut h = Harness::start("tickdb-test-features");
    let (_, outcomes) = h.tick(vec![("roll", ALICE, vec![]), ("roll", ALICE, vec![])]);
    assert_ne!(outcomes[0], outcomes[1]);
}

/// Tick systems run at their rate with the time since their last run; missed
/// periods are skipped rather than replayed.
#[test]
fn tick_systems_run_at_their_rate() {
    let mut h = Harness::start("tickdb-test-features");
    h.call("set_config", OWNER, enc((s("ticking"), 1u64))).unwrap();
    let ticks = |h: &Harness| -> Vec<i64> {
        let rows = h.rows("event").into_iter().filter(|r| r[1] == Value::string("tick"));
        let mut micros: Vec<(u64, i64)> = rows
            .map(|r| match (&r[0], &r[2]) {
                (Value::U64(id), Value::I64(m)) => (*id, *m),
                other => panic!("{other:?}"),
            })
            .collect();
        micros.sort();
        micros.into_iter().map(|(_, m)| m).collect()
    };
    // Heartbeat first ran in set_config's tick, after it (delta 0); 50 Hz is every 20 ms.
    h.clock.advance_micros(20_000);
    h.ticker.run_tick([], false);
    h.clock.advance_micros(10_000);
    h.ticker.run_tick([], false);
    h.clock.advance_micros(10_000);
    h.ticker.run_tick([], false);
    assert_eq!(ticks(&h), [0, 20_000, 20_000]);
    // A long stall: one run, with the whole gap as its delta.
    h.clock.advance_micros(1_000_000);
    h.ticker.run_tick([], false);
    assert_eq!(ticks(&h), [0, 20_000, 20_000, 1_000_000]);
}

/// A one-shot schedule runs once at its time and its row is deleted; a repeating one
/// runs every interval until its row is deleted.
#[test]
fn scheduled_reducers_run_on_time() {
    let mut h = Harness::start("tickdb-test-features");
    let reminders = |h: &Harness, text: &str| {
        h.rows("event").iter().filter(|r| r[1] == Value::string(format!("remind:{text}"))).count()
    };
    h.call("remind_in", ALICE, enc((5_000i64, s("once"), false))).unwrap();
    h.call("remind_in", ALICE, enc((3_000i64, s("again"), true))).unwrap();
    assert_eq!(h.rows("reminder").len(), 2);
    h.clock.advance_micros(2_000);
    h.ticker.run_tick([], false);
    assert_eq!((reminders(&h, "once"), reminders(&h, "again")), (0, 0));
    h.clock.advance_micros(1_000);
    h.ticker.run_tick([], false);
    assert_eq!((reminders(&h, "once"), reminders(&h, "again")), (0, 1));
    h.clock.advance_micros(3_000);
    h.ticker.run_tick([], false);
    assert_eq!((reminders(&h, "once"), reminders(&h, "again")), (1, 2));
    assert_eq!(h.rows("reminder").len(), 1, "the one-shot row is gone");
    h.call("cancel_reminders", ALICE, vec![]).unwrap();
    h.clock.advance_micros(30_000);
    h.ticker.run_tick([], false);
    assert_eq!(reminders(&h, "again"), 2, "a deleted schedule row cancels its calls");
    assert!(
        h.logs
            .recent(100)
            .iter()
            .any(|l| l.message == "reminder: once" && l.reducer.as_deref() == Some("remind"))
    );
}

/// A call in the same tick that postpones a due one-shot row wins: the row fires at its
/// new time. Updating a repeating row's other columns keeps its timer.
#[test]
fn schedule_changes_take_effect() {
    let mut h = Harness::start("tickdb-test-features");
    let fired =
        |h: &Harness| h.rows("event").iter().filter(|r| r[1].to_string().starts_with("\"remind:")).count();
    h.call("remind_in", ALICE, enc((5_000i64, s("late"), false))).unwrap();
    h.clock.advance_micros(5_000);
    h.tick(vec![("postpone_reminders", ALICE, enc(10_000i64))]);
    assert_eq!(fired(&h), 0, "postponed in the tick it was due");
    h.clock.advance_micros(9_000);
    h.ticker.run_tick([], false);
    assert_eq!(fired(&h), 0);
    h.clock.advance_micros(1_000);
    h.ticker.run_tick([], false);
    assert_eq!(fired(&h), 1, "fired at its new time");

    h.call("remind_in", ALICE, enc((3_000i64, s("tick"), true))).unwrap();
    h.clock.advance_micros(2_000);
    h.tick(vec![("touch_reminders", ALICE, vec![])]);
    h.clock.advance_micros(1_000);
    h.ticker.run_tick([], false);
    assert_eq!(fired(&h), 2, "the update did not restart the interval");
}

/// Lifecycle reducers, tick systems and scheduled reducers are not for clients.
#[test]
fn host_only_reducers_refuse_clients() {
    let mut h = Harness::start("tickdb-test-features");
    for reducer in ["init", "connected", "heartbeat"] {
        match h.call(reducer, ALICE, vec![]) {
            Err(CallError::NotCallable(name)) => assert_eq!(name, reducer),
            other => panic!("{reducer}: {other:?}"),
        }
    }
    assert!(h.rows("config").is_empty(), "init did not run");
}

fn hostile() -> Harness {
    let config = HostConfig {
        call_deadline: std::time::Duration::from_millis(50),
        memory_bytes_max: 16 << 20,
        wasm_stack_bytes_max: 256 << 10,
        iterator_rows_max: 2,
        ..HostConfig::default()
    };
    Harness::new(
        "tickdb-test-hostile",
        config,
        EngineConfig { row_bytes_max: 64 << 10, ..EngineConfig::default() },
    )
}

fn counter(h: &Harness, id: u32) -> Option<u64> {
    h.rows("counter").into_iter().find(|r| r[0] == Value::U32(id)).map(|r| match r[1] {
        Value::U64(v) => v,
        _ => unreachable!(),
    })
}

/// Each way a module can go wrong ends only its own call: the call rolls back with an
/// error naming the limit, the instance is replaced, and calls before and after it in
/// the same tick commit.
#[test]
fn hostile_modules_fail_alone() {
    let mut h = hostile();
    let cases: [(&str, TrapKind, &str); 6] = [
        ("spin", TrapKind::Deadline, "deadline of 50 ms"),
        ("hoard", TrapKind::OutOfMemory, "out of memory"),
        ("overflow", TrapKind::StackOverflow, "stack overflow"),
        ("overflow_shadow", TrapKind::Other, "out of bounds memory access"),
        ("panics", TrapKind::Panic, "the dragon ate the save file"),
        ("bad_pointer", TrapKind::AbiViolation, "outside its memory"),
    ];
    for (i, (reducer, kind, message)) in cases.into_iter().enumerate() {
        let (_, mut outcomes) =
            h.tick(vec![("bump", ALICE, enc(1u32)), (reducer, ALICE, vec![]), ("bump", ALICE, enc(1u32))]);
        assert_eq!(outcomes[0], Ok(vec![]), "{reducer}: the call before");
        assert_eq!(outcomes[2], Ok(vec![]), "{reducer}: the call after, on a fresh instance");
        let (got, why) = trapped(outcomes.remove(1));
        assert_eq!(got, kind, "{reducer}: {why}");
        assert!(why.contains(message), "{reducer}: {why}");
        assert_eq!(counter(&h, 0), None, "{reducer}: its write rolled back");
        assert_eq!(counter(&h, 1), Some(2 * (i as u64 + 1)));
        assert!(!h.ticker.is_poisoned());
    }
    assert_eq!(h.ticker.system().instances_replaced(), 6);
    let replaced = h.logs.recent(100).iter().filter(|l| l.message.contains("instance was replaced")).count();
    assert_eq!(replaced, 6);

    assert_eq!(failed(h.call("fails", ALICE, vec![])), "not enough gold");
    assert_eq!(counter(&h, 0), None, "a failed reducer's writes roll back");
    assert_eq!(h.ticker.system().instances_replaced(), 6, "an Err is not a trap");
}

/// Bad rows, unknown table ids and rows past the size limit are statuses, not crashes.
#[test]
fn hostile_writes_get_statuses() {
    let mut h = hostile();
    let status = |h: &Harness, reducer: &str, bytes: &[u8]| match h.returned(reducer, bytes) {
        Value::I32(code) => code,
        other => panic!("{other}"),
    };
    let bad_row = h.call("bad_row", ALICE, vec![]).unwrap();
    assert_eq!(status(&h, "bad_row", &bad_row), tickdb_wasm_abi::abi::Errno::InvalidRow.code());
    let unknown = h.call("unknown_table", ALICE, vec![]).unwrap();
    assert_eq!(status(&h, "unknown_table", &unknown), tickdb_wasm_abi::abi::Errno::NoSuchTable.code());
    let err = failed(h.call("huge_row", ALICE, enc(1u32 << 20)));
    assert!(err.contains("larger than the limit"), "{err}");
    assert_eq!(h.call("huge_row", ALICE, enc(100u32)), Ok(vec![]));
    assert_eq!(h.rows("blob").len(), 1);
    // Iterator snapshots are budgeted: two rows fit, three do not.
    h.call("huge_row", ALICE, enc(10u32)).unwrap();
    let scanned = h.call("scan_blobs", ALICE, vec![]).unwrap();
    assert_eq!(h.returned("scan_blobs", &scanned), Value::U64(2));
    h.call("huge_row", ALICE, enc(10u32)).unwrap();
    let (kind, why) = trapped(h.call("scan_blobs", ALICE, vec![]));
    assert_eq!(kind, TrapKind::Panic);
    assert!(why.contains("at most 2 rows"), "{why}");
}

/// Compiled modules are cached by content: a second host loads the artefact instead of
/// compiling, and a damaged artefact is recompiled rather than trusted.
#[test]
fn compiled_modules_are_cached() {
    let dir = std::env::temp_dir().join(format!("tickdb-module-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = HostConfig { cache_dir: Some(dir.clone()), ..HostConfig::default() };
    let bytes = wasm("tickdb-example-chat");
    let first = ModuleHost::new(config.clone()).unwrap().load(&bytes).unwrap();
    assert!(!first.from_cache);
    let second = ModuleHost::new(config.clone()).unwrap().load(&bytes).unwrap();
    assert!(second.from_cache);
    assert_eq!(first.def, second.def);

    let artefact = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
    let mut damaged = std::fs::read(&artefact).unwrap();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0xFF;
    std::fs::write(&artefact, damaged).unwrap();
    let third = ModuleHost::new(config).unwrap().load(&bytes).unwrap();
    assert!(!third.from_cache, "a damaged artefact is not used");
    assert_eq!(third.def, first.def);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Files that are not tickdb modules are refused with errors that say why.
#[test]
fn foreign_modules_are_refused() {
    let host = ModuleHost::new(HostConfig::default()).unwrap();
    assert!(matches!(host.load(b"not wasm"), Err(ModuleError::Invalid(_))));
    let empty = b"\0asm\x01\0\0\0";
    assert_eq!(host.load(empty).unwrap_err(), ModuleError::MissingExport("__describe_module__"));
    // (module (import "env" "f" (func)))
    let env_import = b"\0asm\x01\0\0\0\x01\x04\x01\x60\0\0\x02\x09\x01\x03env\x01f\0\0";
    let err = host.load(env_import).unwrap_err();
    assert_eq!(err, ModuleError::UnknownImport { module: "env".into(), name: "f".into() });
    assert!(err.to_string().contains("tickdb_1"), "{err}");
}

/// The threaded loop: calls submitted from another thread, replies after their tick,
/// and a tick system that wakes the loop by itself.
#[test]
fn module_runs_in_the_tick_loop() {
    let host = ModuleHost::new(HostConfig::default()).unwrap();
    let module = host.load(&wasm("tickdb-test-features")).unwrap();
    let mut db = Database::new(EngineConfig::default()).unwrap();
    let system = ModuleSystem::new(&host, Arc::clone(&module), &mut db, OWNER).unwrap();
    let ticker = Ticker::new(db, system, Box::new(SystemClock), Box::new(SplitMix64::from_os()));
    let (sink, outputs) = mpsc::sync_channel::<TickOutput>(1024);
    let handle = TickLoop::spawn(ticker, sink, &EngineConfig::default()).unwrap();
    let (to, replies) = mpsc::channel();
    let set = module.reducer_id("set_config").unwrap();
    let args = enc((s("ticking"), 1u64));
    handle.submit(ModuleWork::call(set, ALICE, CONN, &args, Some(ReplyTo { id: 1, to }))).unwrap();
    let reply = replies.recv().unwrap();
    assert_eq!((reply.id, reply.outcome), (1, Ok(vec![])));
    // No more work arrives: only the tick system can make ticks now.
    let event = handle.read(|db| db.table_id("event").unwrap()).unwrap();
    let mut tick_events = 0;
    while tick_events < 3 {
        let output = outputs.recv().expect("the loop keeps ticking");
        let changes = output.changes.iter().filter(|c| c.table == event);
        tick_events += changes.map(|c| c.inserts.len()).sum::<usize>();
    }
    let events = handle.read(move |db| db.table(event).len()).unwrap();
    assert!(events >= 3);
    let db = handle.shutdown().expect("clean shutdown");
    let rows: Vec<_> = db.table(event).iter().map(|r| r.value(ColId(1))).collect();
    assert!(rows.iter().all(|k| *k == Value::string("tick")));
}

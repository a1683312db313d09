//! Durability end to end: a module's database writes every tick to the commit log,
//! replies only once their tick is durable (confirmed mode), and a restart replays the
//! log into a new database with the same state. A failed write stops the database, and
//! the calls it could not make durable are told so.

use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};

use tickdb::Type;
use tickdb_engine::commitlog::device::{FileIo, IoMode, LogDevice, PwriteDevice};
use tickdb_engine::commitlog::{LogConfig, LogEnd};
use tickdb_engine::{
    CallError, CallReply, Database, Durability, DurableSink, EngineConfig, HostConfig, LoadedModule,
    ModuleHost, ModuleSystem, ModuleWork, ReplyTo, SplitMix64, SystemClock, TickHandle, TickLoop, Ticker,
    replay,
};
use tickdb_test_modules::wasm;
use tickdb_wasm_abi::{ConnectionId, Identity, Lifecycle, Value};

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("tickdb-durability-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const OWNER: Identity = Identity([9; 32]);
const CONN: ConnectionId = ConnectionId([7; 16]);

fn player(i: u8) -> Identity {
    Identity([i; 32])
}

/// A database of `module`: tables created, the log in `dir` replayed into it.
fn recover(host: &ModuleHost, module: &Arc<LoadedModule>, dir: &Path) -> (Ticker<ModuleSystem>, LogEnd, u64) {
    let mut db = Database::new(EngineConfig::default()).unwrap();
    let system = ModuleSystem::new(host, Arc::clone(module), &mut db, OWNER).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let replayed = replay(dir, &mut db, None).unwrap();
    let mut ticker = Ticker::new(db, system, Box::new(SystemClock), Box::new(SplitMix64::new(3)));
    ticker.keep_log();
    (ticker, replayed.end, replayed.transactions)
}

fn tables(db: &Database) -> Vec<(String, Vec<Vec<Value>>)> {
    db.tables()
        .map(|t| {
            let mut rows: Vec<Vec<Value>> = t.iter().map(|r| r.to_values()).collect();
            rows.sort();
            (t.name().to_string(), rows)
        })
        .collect()
}

struct Client {
    module: Arc<LoadedModule>,
    replies: mpsc::Receiver<CallReply>,
    to: mpsc::Sender<CallReply>,
    next: u64,
}

impl Client {
    fn new(module: &Arc<LoadedModule>) -> Client {
        let (to, replies) = mpsc::channel();
        Client { module: Arc::clone(module), replies, to, next: 0 }
    }

    fn reply_to(&mut self) -> Option<ReplyTo> {
        self.next += 1;
        Some(ReplyTo { id: self.next, to: self.to.clone() })
    }

    fn call(
        &mut self,
        handle: &TickHandle<ModuleWork>,
        reducer: &str,
        who: Identity,
        args: Vec<u8>,
    ) -> CallReply {
        let id = self.module.reducer_id(reducer).unwrap();
        let reply = self.reply_to();
        handle.submit(ModuleWork::call(id, who, CONN, &args, reply)).unwrap();
        self.replies.recv().unwrap()
    }

    fn connect(&mut self, handle: &TickHandle<ModuleWork>, who: Identity) -> CallReply {
        let reply = self.reply_to();
        handle.submit(ModuleWork::lifecycle(Lifecycle::ClientConnected, who, CONN, reply)).unwrap();
        self.replies.recv().unwrap()
    }
}

/// Confirmed mode: every reply comes after its tick is durable. A restart replays the
/// log into an equal database, and the next run appends after it.
#[test]
fn acknowledged_calls_survive_a_restart() {
    let dir = TempDir::new("restart");
    let host = ModuleHost::new(HostConfig::default()).unwrap();
    let module = host.load(&wasm("tickdb-example-chat")).unwrap();
    let mut expected = None;
    for run in 0..3u8 {
        let (ticker, end, transactions) = recover(&host, &module, &dir.0);
        if let Some(expected) = &expected {
            assert_eq!(&tables(ticker.db()), expected, "run {run}: the replayed state");
            assert!(transactions > 0);
        }
        let sink = DurableSink::open(&dir.0, &end, LogConfig::default(), Durability::Confirmed).unwrap();
        let watch = sink.watch();
        let handle = TickLoop::spawn(ticker, sink, &EngineConfig::default()).unwrap();
        let mut client = Client::new(&module);
        for i in 0..5u8 {
            let who = player(run * 10 + i);
            for reply in [
                client.connect(&handle, who),
                client.call(&handle, "set_name", who, format!("p{run}-{i}").to_bytes()),
                client.call(&handle, "send_message", who, format!("hello from {run}-{i}").to_bytes()),
            ] {
                assert_eq!(reply.outcome, Ok(vec![]));
                let durable = watch.durable_tick().expect("something is durable");
                assert!(durable >= reply.tick.0, "replied to tick {} with {durable} durable", reply.tick.0);
            }
        }
        // A failed call is not logged, and changes nothing after the restart either.
        let failed = client.call(&handle, "send_message", player(run * 10), String::new().to_bytes());
        assert!(matches!(failed.outcome, Err(CallError::Failed(_))));
        let db = handle.shutdown().unwrap();
        expected = Some(tables(&db));
        assert_eq!(db.table(db.table_id("message").unwrap()).len(), 5 * (run as usize + 1));
    }
}

/// Relaxed mode replies without waiting for the disk; what was written reads back once
/// the log is closed.
#[test]
fn relaxed_mode_logs_too() {
    let dir = TempDir::new("relaxed");
    let host = ModuleHost::new(HostConfig::default()).unwrap();
    let module = host.load(&wasm("tickdb-test-features")).unwrap();
    let (ticker, end, _) = recover(&host, &module, &dir.0);
    let sink = DurableSink::open(&dir.0, &end, LogConfig::default(), Durability::Relaxed).unwrap();
    let handle = TickLoop::spawn(ticker, sink, &EngineConfig::default()).unwrap();
    let mut client = Client::new(&module);
    let hero = |name: &str, level: u32| {
        let mut args = (name.to_string(), level, 1u32).to_bytes();
        args.push(0); // Class::Warrior
        args
    };
    for (i, name) in ["ayla", "brann", "cora"].into_iter().enumerate() {
        assert!(client.call(&handle, "create_hero", player(1), hero(name, i as u32)).outcome.is_ok());
    }
    let before = tables(&handle.shutdown().unwrap());
    let (ticker, end, transactions) = recover(&host, &module, &dir.0);
    assert_eq!(tables(ticker.db()), before);
    assert!(transactions >= 3);
    // Sequences continue past the replayed rows: the next hero gets id 4.
    let sink = DurableSink::open(&dir.0, &end, LogConfig::default(), Durability::Relaxed).unwrap();
    let handle = TickLoop::spawn(ticker, sink, &EngineConfig::default()).unwrap();
    let created = client.call(&handle, "create_hero", player(1), hero("dax", 9)).outcome.unwrap();
    assert_eq!(u64::from_le_bytes(created[..8].try_into().unwrap()), 4);
    drop(handle);
}

/// A file that runs out of space after `space` bytes.
struct FullDisk {
    file: std::fs::File,
    space: u64,
}

impl FileIo for FullDisk {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<usize> {
        if offset + data.len() as u64 > self.space {
            return Err(io::Error::from_raw_os_error(28));
        }
        std::os::unix::fs::FileExt::write_at(&self.file, data, offset)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// When the log cannot write, the database stops: calls whose tick was not made
/// durable are told so, later calls are refused, and the log holds exactly the
/// acknowledged calls.
#[test]
fn a_failed_log_write_stops_the_database() {
    let dir = TempDir::new("full");
    let host = ModuleHost::new(HostConfig::default()).unwrap();
    let module = host.load(&wasm("tickdb-example-chat")).unwrap();
    let (ticker, end, _) = recover(&host, &module, &dir.0);
    let opener = Box::new(|path: &Path, _: IoMode| -> io::Result<(Box<dyn LogDevice>, Option<String>)> {
        let file = OpenOptions::new().create(true).write(true).truncate(false).open(path)?;
        Ok((Box::new(PwriteDevice::new(FullDisk { file, space: 1500 })) as Box<dyn LogDevice>, None))
    });
    let sink =
        DurableSink::open_with(&dir.0, &end, LogConfig::default(), Durability::Confirmed, opener).unwrap();
    let handle = TickLoop::spawn(ticker, sink, &EngineConfig::default()).unwrap();
    let mut client = Client::new(&module);
    let mut acknowledged = 0;
    let refused = loop {
        let who = player(acknowledged as u8 + 1);
        match client.connect(&handle, who).outcome {
            Ok(_) => acknowledged += 1,
            Err(e) => break e,
        }
        assert!(acknowledged < 100, "the disk never filled");
    };
    assert!(matches!(refused, CallError::NotDurable(ref why) if why.contains("No space")), "{refused}");
    // The next tick finds the log failed: its call is told so, and the loop stops.
    let id = module.reducer_id("set_name").unwrap();
    let reply = client.reply_to();
    if handle.submit(ModuleWork::call(id, player(1), CONN, &"late".to_string().to_bytes(), reply)).is_ok() {
        let late = client.replies.recv().unwrap();
        assert!(matches!(late.outcome, Err(CallError::NotDurable(_))), "{:?}", late.outcome);
    }
    // A read queued after that call runs only after it, and the loop is gone by then.
    assert!(handle.read(|_| ()).is_err(), "the database kept taking work");
    assert!(handle.failure().unwrap().contains("No space"));
    drop(handle);
    let (ticker, _, transactions) = recover(&host, &module, &dir.0);
    assert_eq!(transactions, acknowledged);
    assert_eq!(ticker.db().table(ticker.db().table_id("user").unwrap()).len() as u64, acknowledged);
}

fn hero_args(name: &str, level: u32) -> Vec<u8> {
    let mut args = (name.to_string(), level, 1u32).to_bytes();
    args.push(0); // Class::Warrior
    args
}

/// Runs the features module over `data` (snapshots and log) for one session: recovers,
/// runs `calls`, takes a snapshot after call `snapshot_after` (if any), returns the
/// recovered report, the replies' values, and the final tables.
#[allow(clippy::type_complexity)]
fn session(
    host: &ModuleHost,
    module: &Arc<LoadedModule>,
    data: &Path,
    calls: &[(&str, Vec<u8>)],
    snapshot_after: Option<usize>,
    log: LogConfig,
) -> (tickdb_engine::Recovered, Vec<Vec<u8>>, Vec<(String, Vec<Vec<Value>>)>) {
    let (snapshots, log_dir) = (data.join("snapshots"), data.join("log"));
    std::fs::create_dir_all(&log_dir).unwrap();
    let mut db = Database::new(EngineConfig::default()).unwrap();
    let system = ModuleSystem::new(host, Arc::clone(module), &mut db, OWNER).unwrap();
    let recovered = tickdb_engine::recover(&snapshots, &log_dir, &mut db).unwrap();
    let mut ticker = Ticker::new(db, system, Box::new(SystemClock), Box::new(SplitMix64::new(3)));
    ticker.keep_log();
    let sink = DurableSink::open(&log_dir, &recovered.end, log, Durability::Confirmed).unwrap();
    let watch = sink.watch();
    let handle = TickLoop::spawn(ticker, sink, &EngineConfig::default()).unwrap();
    let mut client = Client::new(module);
    let mut values = Vec::new();
    for (i, (reducer, args)) in calls.iter().enumerate() {
        values.push(client.call(&handle, reducer, player(1), args.clone()).outcome.unwrap());
        if snapshot_after == Some(i) {
            tickdb_engine::snapshot::take(&handle, &watch, &snapshots).unwrap();
        }
    }
    let db = handle.shutdown().unwrap();
    (recovered, values, tables(&db))
}

fn hero_id(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes[..8].try_into().unwrap())
}

/// A restart loads the newest snapshot and replays only the log after it; sequences
/// come back where they were, so an id handed out and deleted is not handed out again.
#[test]
fn snapshots_restore_state_and_sequences() {
    let dir = TempDir::new("snapshot");
    let host = ModuleHost::new(HostConfig::default()).unwrap();
    let module = host.load(&wasm("tickdb-test-features")).unwrap();
    let calls = [
        ("create_hero", hero_args("ayla", 1)),
        ("create_hero", hero_args("brann", 9)),
        ("cull", 5u32.to_bytes()), // deletes ayla (id 1)
        ("create_hero", hero_args("cora", 7)),
        ("cull", 8u32.to_bytes()), // deletes cora (id 3): the newest id is gone
        ("create_hero", hero_args("dax", 9)),
    ];
    let (_, values, expected) = session(&host, &module, &dir.0, &calls, Some(4), LogConfig::default());
    assert_eq!(hero_id(&values[5]), 4);

    let (recovered, values, after) =
        session(&host, &module, &dir.0, &[("create_hero", hero_args("edda", 9))], None, LogConfig::default());
    let (path, loaded) = recovered.snapshot.expect("the snapshot was used");
    assert!(path.ends_with(tickdb_engine::snapshot::snapshot_name(loaded.tick)));
    assert_eq!(recovered.replayed.transactions, 1, "only the call after the snapshot was replayed");
    assert_eq!(hero_id(&values[0]), 5, "ids 3 and 4 are not handed out again");
    let heroes = |t: &[(String, Vec<Vec<Value>>)]| t.iter().find(|(n, _)| n == "hero").unwrap().1.len();
    assert_eq!((heroes(&expected), heroes(&after)), (2, 3));
}

/// A snapshot that fails its checksum is never used: recovery falls back to an older
/// one and the log, and names what it passed over. With no usable snapshot and the
/// log's start pruned, it refuses, naming the file.
#[test]
fn corrupt_snapshots_are_passed_over_or_refused() {
    let dir = TempDir::new("corrupt-snapshot");
    let host = ModuleHost::new(HostConfig::default()).unwrap();
    let module = host.load(&wasm("tickdb-test-features")).unwrap();
    let small = LogConfig { segment_bytes_max: 300, ..LogConfig::default() };
    let calls: Vec<_> = (0..12).map(|i| ("create_hero", hero_args(&format!("h{i}"), i))).collect();
    let (_, _, expected) = session(&host, &module, &dir.0, &calls[..6], Some(2), small.clone());
    let (_, _, expected2) = session(&host, &module, &dir.0, &calls[6..], Some(3), small.clone());
    assert_ne!(expected, expected2);
    let snapshots = tickdb_engine::snapshot::list_snapshots(&dir.0.join("snapshots")).unwrap();
    assert_eq!(snapshots.len(), 2);
    let newest = snapshots[0].1.clone();
    let mut bytes = std::fs::read(&newest).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&newest, &bytes).unwrap();

    let (recovered, _, state) = session(&host, &module, &dir.0, &[], None, small.clone());
    assert_eq!(state, expected2, "the older snapshot and the log give the same state");
    assert_eq!(recovered.snapshot.unwrap().1.tick, snapshots[1].0);
    assert_eq!(recovered.skipped.len(), 1);
    assert!(
        recovered.skipped[0].to_string().contains(&*newest.to_string_lossy()),
        "{}",
        recovered.skipped[0]
    );

    // The corrupt snapshot was set aside: kept, but no longer one of the snapshots.
    assert!(newest.with_extension("tdbsnap.corrupt").exists());
    let left = tickdb_engine::snapshot::list_snapshots(&dir.0.join("snapshots")).unwrap();
    assert_eq!(left, vec![snapshots[1].clone()]);

    // Prune the log the older snapshot covers, then damage that snapshot too: nothing
    // is left to fall back on.
    let deleted = tickdb_engine::prune(&dir.0.join("snapshots"), &dir.0.join("log"), 1).unwrap();
    assert!(deleted.iter().any(|p| p.extension().is_some_and(|e| e == "tdblog")), "{deleted:?}");
    let older = &snapshots[1].1;
    let mut bytes = std::fs::read(older).unwrap();
    bytes[20] ^= 0x01;
    std::fs::write(older, &bytes).unwrap();
    let mut db = Database::new(EngineConfig::default()).unwrap();
    let _system = ModuleSystem::new(&host, Arc::clone(&module), &mut db, OWNER).unwrap();
    let err = tickdb_engine::recover(&dir.0.join("snapshots"), &dir.0.join("log"), &mut db).unwrap_err();
    assert!(matches!(err, tickdb_engine::RecoverError::NoBase { .. }), "{err}");
    assert!(err.to_string().contains("checksum"), "{err}");
    assert!(db.tables().all(|t| t.is_empty()), "nothing half-loaded");
}

/// Pruning keeps what recovery needs: after it, a restart gives the same state.
#[test]
fn pruned_logs_still_recover() {
    let dir = TempDir::new("prune");
    let host = ModuleHost::new(HostConfig::default()).unwrap();
    let module = host.load(&wasm("tickdb-test-features")).unwrap();
    let small = LogConfig { segment_bytes_max: 300, ..LogConfig::default() };
    let calls: Vec<_> = (0..20).map(|i| ("create_hero", hero_args(&format!("h{i}"), i))).collect();
    let (_, _, expected) = session(&host, &module, &dir.0, &calls, Some(14), small.clone());
    let segments = || std::fs::read_dir(dir.0.join("log")).unwrap().count();
    let before = segments();
    let deleted = tickdb_engine::prune(&dir.0.join("snapshots"), &dir.0.join("log"), 1).unwrap();
    assert!(!deleted.is_empty() && segments() < before, "{deleted:?}");
    let (recovered, _, state) = session(&host, &module, &dir.0, &[], None, small);
    assert!(recovered.snapshot.is_some());
    assert_eq!(state, expected);
}

/// A hot backup of a running database recovers to the state it was copied at.
#[test]
fn hot_backups_recover() {
    let dir = TempDir::new("backup-source");
    let copy = TempDir::new("backup-copy");
    let host = ModuleHost::new(HostConfig::default()).unwrap();
    let module = host.load(&wasm("tickdb-test-features")).unwrap();
    let log_dir = dir.0.join("log");
    std::fs::create_dir_all(&log_dir).unwrap();
    let mut db = Database::new(EngineConfig::default()).unwrap();
    let system = ModuleSystem::new(&host, Arc::clone(&module), &mut db, OWNER).unwrap();
    let recovered = tickdb_engine::recover(&dir.0.join("snapshots"), &log_dir, &mut db).unwrap();
    let mut ticker = Ticker::new(db, system, Box::new(SystemClock), Box::new(SplitMix64::new(3)));
    ticker.keep_log();
    let sink =
        DurableSink::open(&log_dir, &recovered.end, LogConfig::default(), Durability::Confirmed).unwrap();
    let watch = sink.watch();
    let handle = TickLoop::spawn(ticker, sink, &EngineConfig::default()).unwrap();
    let mut client = Client::new(&module);
    for i in 0..5 {
        client.call(&handle, "create_hero", player(1), hero_args(&format!("h{i}"), i)).outcome.unwrap();
    }
    let (tick, _) = tickdb_engine::snapshot::backup(&handle, &watch, &log_dir, &copy.0).unwrap();
    let at_backup = handle.read(tables).unwrap();
    let db = handle.shutdown().unwrap();
    // The tick system may tick on after the backup; it writes nothing here.
    assert!(db.last_tick() >= Some(tick));
    let (recovered, _, state) = session(&host, &module, &copy.0, &[], None, LogConfig::default());
    assert_eq!(recovered.snapshot.unwrap().1.tick, tick);
    assert_eq!(state, at_backup);
}

fn restore(
    data: &tickdb_engine::store::DataDir,
    host: &ModuleHost,
    meta: &tickdb_engine::store::DatabaseMeta,
) -> tickdb_engine::store::Restored {
    data.restore(host, meta, EngineConfig::default(), Box::new(SystemClock), Box::new(SplitMix64::new(1)))
        .unwrap()
}

/// A server's data directory brings every database back after a restart: name, owner,
/// module and state, with no action from the user.
#[test]
fn a_data_directory_restores_every_database() {
    use tickdb_engine::store::DataDir;
    let dir = TempDir::new("data-dir");
    let data = DataDir::new(&dir.0);
    let config = HostConfig { cache_dir: Some(data.module_cache()), ..HostConfig::default() };
    let chat = wasm("tickdb-example-chat");
    let features = wasm("tickdb-test-features");
    data.create("chat", player(7), &chat).unwrap();
    data.create("world", player(8), &features).unwrap();
    assert!(data.create("chat", player(7), &chat).is_err(), "names are unique");
    assert!(data.create("no spaces", player(7), &chat).is_err());

    let mut expected = Vec::new();
    {
        let host = ModuleHost::new(config.clone()).unwrap();
        for meta in data.list().unwrap() {
            let restored = restore(&data, &host, &meta);
            let log = data.log(&meta.name);
            let sink =
                DurableSink::open(&log, &restored.recovered.end, LogConfig::default(), Durability::Confirmed)
                    .unwrap();
            let handle = TickLoop::spawn(restored.ticker, sink, &EngineConfig::default()).unwrap();
            let mut client = Client::new(&restored.module);
            match meta.name.as_str() {
                "chat" => assert_eq!(client.connect(&handle, player(1)).outcome, Ok(vec![])),
                _ => assert!(
                    client.call(&handle, "create_hero", player(1), hero_args("ayla", 3)).outcome.is_ok()
                ),
            }
            expected.push((meta.clone(), tables(&handle.shutdown().unwrap())));
        }
    }
    // A new server over the same directory.
    let host = ModuleHost::new(config).unwrap();
    let metas = data.list().unwrap();
    assert_eq!(
        metas.iter().map(|m| (m.name.as_str(), m.owner)).collect::<Vec<_>>(),
        [("chat", player(7)), ("world", player(8))]
    );
    for (meta, state) in expected {
        let restored = restore(&data, &host, &meta);
        assert!(restored.module.from_cache, "{}: compiled again", meta.name);
        assert_eq!(tables(restored.ticker.db()), state, "{}", meta.name);
    }
}

/// With a snapshot policy, a database snapshots itself as its log grows, prunes what
/// the snapshots cover, and recovers to the same state from what is left.
#[test]
fn snapshots_are_taken_and_pruned_by_policy() {
    use tickdb_engine::durability::SnapshotPolicy;
    let dir = TempDir::new("policy");
    let host = ModuleHost::new(HostConfig::default()).unwrap();
    let module = host.load(&wasm("tickdb-test-features")).unwrap();
    let (snapshots, log) = (dir.0.join("snapshots"), dir.0.join("log"));
    std::fs::create_dir_all(&log).unwrap();
    let mut db = Database::new(EngineConfig::default()).unwrap();
    let system = ModuleSystem::new(&host, Arc::clone(&module), &mut db, OWNER).unwrap();
    let recovered = tickdb_engine::recover(&snapshots, &log, &mut db).unwrap();
    let mut ticker = Ticker::new(db, system, Box::new(SystemClock), Box::new(SplitMix64::new(3)));
    ticker.keep_log();
    let small = LogConfig { segment_bytes_max: 400, ..LogConfig::default() };
    let policy = SnapshotPolicy { every_log_bytes: 600, keep: 2 };
    let sink = DurableSink::open(&log, &recovered.end, small, Durability::Confirmed)
        .unwrap()
        .with_snapshots(&snapshots, &log, policy)
        .unwrap();
    let handle = TickLoop::spawn(ticker, sink, &EngineConfig::default()).unwrap();
    let mut client = Client::new(&module);
    for i in 0..40 {
        client.call(&handle, "create_hero", player(1), hero_args(&format!("h{i}"), i)).outcome.unwrap();
    }
    let expected = tables(&handle.shutdown().unwrap());
    let taken = tickdb_engine::snapshot::list_snapshots(&snapshots).unwrap();
    assert!(!taken.is_empty() && taken.len() <= 2, "{taken:?}");
    let first_segment = tickdb_engine::commitlog::segments::list_segments(&log).unwrap()[0].0;
    assert!(first_segment > 1, "the segments the snapshots cover were pruned");
    let (recovered, _, state) = session(&host, &module, &dir.0, &[], None, LogConfig::default());
    assert_eq!(recovered.snapshot.unwrap().1.tick, taken[0].0);
    assert_eq!(state, expected);
}

/// A transaction that writes nothing is not logged, so a tick of read-only calls has no
/// frame: a log whose first frame is not the first tick still recovers, as the log
/// holds every transaction from the first on.
#[test]
fn ticks_that_write_nothing_leave_no_frame() {
    let dir = TempDir::new("read-only");
    let host = ModuleHost::new(HostConfig::default()).unwrap();
    let module = host.load(&wasm("tickdb-test-features")).unwrap();
    let calls =
        [("hero_count", Vec::new()), ("create_hero", hero_args("ayla", 1)), ("hero_count", Vec::new())];
    let (_, values, expected) = session(&host, &module, &dir.0, &calls, None, LogConfig::default());
    assert_eq!(values[2], 1u64.to_bytes());
    let (recovered, _, after) = session(&host, &module, &dir.0, &[], None, LogConfig::default());
    assert!(recovered.snapshot.is_none());
    assert_eq!(recovered.replayed.transactions, 1, "only the write was logged");
    assert_eq!(after, expected);
}

/// A migration is recorded in an order a crash cannot tear: while the record still
/// names the old module, a restart brings the old tables back (the migration's
/// snapshot does not match them and is set aside); once it names the new one, the
/// database starts from that snapshot, with the new tables, its rows migrated, and
/// the snapshots and module of the old tables gone.
#[test]
fn a_migration_is_recorded_crash_safely() {
    use tickdb_engine::Migration;
    use tickdb_engine::store::DataDir;
    let dir = TempDir::new("migration");
    let data = DataDir::new(&dir.0);
    let host = ModuleHost::new(HostConfig::default()).unwrap();
    let (v1, v2) = (wasm("tickdb-test-evolve"), wasm("tickdb-test-evolve-v2"));
    let meta = data.create("game", player(7), &v1).unwrap();
    let restored = restore(&data, &host, &meta);
    let sink = DurableSink::open(
        &data.log("game"),
        &restored.recovered.end,
        LogConfig::default(),
        Durability::Confirmed,
    )
    .unwrap();
    let handle = TickLoop::spawn(restored.ticker, sink, &EngineConfig::default()).unwrap();
    let mut client = Client::new(&restored.module);
    for name in ["ada", "bo"] {
        client.call(&handle, "join", player(1), name.to_string().to_bytes()).outcome.unwrap();
    }
    let mut db = handle.shutdown().unwrap();
    let before = tables(&db);
    // An automatic snapshot of the old tables, taken before the migration.
    let (old_tick, old_snapshot) = tickdb_engine::snapshot::capture(&db);
    tickdb_engine::snapshot::install(&data.snapshots("game"), old_tick, &old_snapshot).unwrap();

    let module = host.load(&v2).unwrap();
    let migration = Migration::plan(&db, &module.def).unwrap();
    let order = migration.table_order(&db);
    migration.apply(&mut db).unwrap();
    let (tick, snapshot) = tickdb_engine::snapshot::capture(&db);
    // A crash after the new tables' snapshot is written, before the record is.
    tickdb_engine::snapshot::install(&data.snapshots("game"), tick + 1, &snapshot).unwrap();
    let restored = restore(&data, &host, &meta);
    assert_eq!(tables(restored.ticker.db()), before, "the old module is still in charge");
    assert_eq!(restored.recovered.skipped.len(), 1, "the new tables' snapshot was set aside");
    drop(restored);

    let next = data.migrate(&meta, &v2, order, tick, &snapshot).unwrap();
    assert_eq!(next.migrated_at, tick);
    let old_order: Vec<&str> = db.tables().take(2).map(|t| t.name()).collect();
    assert_eq!(next.tables, [old_order[0], old_order[1], "guild"], "new tables go after the old ones");
    assert_eq!(data.list().unwrap(), std::slice::from_ref(&next));
    let restored = restore(&data, &host, &next);
    assert_eq!(restored.recovered.snapshot.as_ref().unwrap().1.tick, tick);
    let migrated = tables(restored.ticker.db());
    assert_eq!(migrated, tables(&db));
    let titles = Value::Option(Some(Box::new(Value::string("newcomer"))));
    let players = &migrated.iter().find(|(name, _)| name == "player").unwrap().1;
    assert_eq!(players[0], [Value::U64(1), Value::string("ada"), Value::U32(1), titles]);
    let snapshots = tickdb_engine::snapshot::list_snapshots(&data.snapshots("game")).unwrap();
    assert_eq!(snapshots.iter().map(|(t, _)| *t).collect::<Vec<_>>(), [tick], "older snapshots are gone");
    let files: Vec<String> = std::fs::read_dir(data.database_dir("game"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("module-"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
}

/// A module replaced between ticks takes over at once: a call resolved against the
/// module it replaced reaches the reducer of the same name in the new one, and a call
/// resolved against some other module is refused rather than run as another reducer.
#[test]
fn calls_made_against_a_replaced_module_reach_the_reducer_of_the_same_name() {
    use tickdb_engine::Migration;
    let host = Arc::new(ModuleHost::new(HostConfig::default()).unwrap());
    let v1 = host.load(&wasm("tickdb-test-evolve")).unwrap();
    let v2 = host.load(&wasm("tickdb-test-evolve-v2")).unwrap();
    let chat = host.load(&wasm("tickdb-example-chat")).unwrap();
    let mut db = Database::new(EngineConfig::default()).unwrap();
    let system = ModuleSystem::new(&host, Arc::clone(&v1), &mut db, OWNER).unwrap();
    let ticker = Ticker::new(db, system, Box::new(SystemClock), Box::new(SplitMix64::new(3)));
    let handle = TickLoop::spawn(ticker, (), &EngineConfig::default()).unwrap();
    let (next, by) = (Arc::clone(&v2), Arc::clone(&host));
    let changes = handle
        .exclusive(move |db: &mut Database, system: &mut ModuleSystem| {
            let migration = Migration::plan(db, &next.def).unwrap();
            let changes = migration.changes().len();
            migration.apply(db).unwrap();
            system.replace_module(&by, next, db).unwrap();
            changes
        })
        .unwrap();
    assert!(changes >= 5, "{changes} changes");
    let (to, replies) = mpsc::channel();
    let call = |module: &LoadedModule, reducer: &str, args: Vec<u8>| {
        let id = module.reducer_id(reducer).unwrap();
        let reply = Some(ReplyTo { id: 0, to: to.clone() });
        handle.submit(ModuleWork::call_of(module, id, player(1), CONN, &args, reply)).unwrap();
        replies.recv().unwrap().outcome
    };
    call(&v1, "join", "ada".to_string().to_bytes()).unwrap();
    let level = call(&v2, "level_up", 1u64.to_bytes()).unwrap();
    assert_eq!(level, 2u32.to_bytes(), "v1's `join` ran as v2's, which sets the level");
    let err = call(&chat, "set_name", "ada".to_string().to_bytes()).unwrap_err().to_string();
    assert!(err.contains("the module was replaced"), "{err}");
    let players = handle.read(|db| db.table(db.table_id("player").unwrap()).len()).unwrap();
    assert_eq!(players, 1);
}

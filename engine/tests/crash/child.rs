//! The process the crash test kills: a database of the bench module, with its commit
//! log in confirmed mode, under a steady load of `insert_pair` calls.
//!
//! `tickdb-crash-child WASM DATA_DIR`: recovers the database from its snapshots and
//! log in `DATA_DIR` (it snapshots itself often, so kills land in those writes too),
//! prints `recovered` and every item value it holds, then calls `insert_pair(v)` for
//! v = 1, 2, 3… above what it recovered, printing `ack v` once each call is
//! acknowledged, until it is killed.

use std::io::Write;
use std::sync::{Arc, mpsc};

use tickdb_engine::commitlog::LogConfig;
use tickdb_engine::{
    Database, Durability, DurableSink, EngineConfig, HostConfig, ModuleHost, ModuleSystem, ModuleWork,
    ReplyTo, SnapshotPolicy, SplitMix64, SystemClock, TickLoop, Ticker, recover,
};
use tickdb_wasm_abi::{ColId, ConnectionId, Identity, Value};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (wasm, data) = (std::path::Path::new(&args[1]), std::path::Path::new(&args[2]));
    let config = HostConfig { cache_dir: Some(data.join("cache")), ..HostConfig::default() };
    let host = ModuleHost::new(config).expect("host");
    let module = host.load(&std::fs::read(wasm).expect("wasm")).expect("module");
    let mut db = Database::new(EngineConfig::default()).expect("db");
    let system = ModuleSystem::new(&host, Arc::clone(&module), &mut db, Identity::default()).expect("system");
    let (log, snapshots) = (data.join("log"), data.join("snapshots"));
    std::fs::create_dir_all(&log).expect("log dir");
    let recovered = recover(&snapshots, &log, &mut db).expect("recover");
    let item = db.table_id("item").expect("item table");
    let mut values: Vec<u64> = db
        .table(item)
        .iter()
        .map(|r| match r.value(ColId(1)) {
            Value::U64(v) => v,
            other => panic!("{other}"),
        })
        .collect();
    values.sort_unstable();
    let mut out = std::io::stdout().lock();
    let listed: Vec<String> = values.iter().map(u64::to_string).collect();
    writeln!(out, "recovered {}", listed.join(" ")).expect("stdout");
    out.flush().expect("stdout");

    let mut ticker = Ticker::new(db, system, Box::new(SystemClock), Box::new(SplitMix64::from_os()));
    ticker.keep_log();
    // Small segments and frequent snapshots, so that kills also land in rotations,
    // snapshot writes and pruning.
    let config = LogConfig { segment_bytes_max: 16 << 10, ..LogConfig::default() };
    let policy = SnapshotPolicy { every_log_bytes: 2 << 10, keep: 2 };
    let sink = DurableSink::open(&log, &recovered.end, config, Durability::Confirmed)
        .expect("log")
        .with_snapshots(&snapshots, &log, policy)
        .expect("snapshots");
    let handle = TickLoop::spawn(ticker, sink, &EngineConfig::default()).expect("loop");
    let insert_pair = module.reducer_id("insert_pair").expect("reducer");
    let (to, replies) = mpsc::channel();
    let mut next = values.last().map_or(1, |v| v / 2 + 1);
    let mut in_flight = 0;
    loop {
        while in_flight < 64 {
            let args = next.to_le_bytes();
            let reply = Some(ReplyTo { id: next, to: to.clone() });
            handle
                .submit(ModuleWork::call(insert_pair, Identity([1; 32]), ConnectionId([1; 16]), &args, reply))
                .expect("submit");
            next += 1;
            in_flight += 1;
        }
        let reply = replies.recv().expect("reply");
        in_flight -= 1;
        reply.outcome.expect("insert_pair succeeds");
        writeln!(out, "ack {}", reply.id).expect("stdout");
        out.flush().expect("stdout");
    }
}

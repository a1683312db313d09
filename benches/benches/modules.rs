//! The module host: reducer throughput, call overheads and module load times.
//!
//! - Reducer throughput, with the `tickdb-test-bench` module: an empty reducer, an
//!   insert, and `move_to` (find a player by its unique identity, update its position,
//!   over 10,000 players). Measured two ways: ticks of 4,096 calls run by the
//!   [`Ticker`] on this thread (each call its own transaction, replies included), and
//!   the threaded [`TickLoop`] fed from another thread, a million calls with every
//!   reply received: what a server's network threads would see.
//! - Guest-to-host: a reducer making 100,000 `row_count` host calls, against one
//!   making none. Host-to-guest: the empty reducer's full call, per call.
//! - Loading `examples/chat`: compiling it, and loading its cached artefact.
//!
//! Run with `cargo bench -p tickdb-benches --bench modules`.

use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tickdb::Type;
use tickdb_engine::commitlog::{LogConfig, LogEnd};
use tickdb_engine::{
    CallReply, Database, Durability, DurableSink, EngineConfig, HostConfig, LoadedModule, ModuleHost,
    ModuleSystem, ModuleWork, ReplyTo, SplitMix64, SystemClock, TickContext, TickHandle, TickLoop,
    TickSystem, Ticker, Tx, replay,
};
use tickdb_test_modules::wasm;
use tickdb_wasm_abi::{ConnectionId, Identity};

const BATCH: usize = 4096;
const PLAYERS: usize = 10_000;

fn identity(i: usize) -> Identity {
    let mut id = [0u8; 32];
    id[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    Identity(id)
}

struct Bench {
    module: Arc<LoadedModule>,
    ticker: Ticker<ModuleSystem>,
    replies: mpsc::Receiver<CallReply>,
    reply_to: mpsc::Sender<CallReply>,
}

impl Bench {
    fn new(host: &ModuleHost, module: &Arc<LoadedModule>) -> Bench {
        let mut db = Database::new(EngineConfig::default()).expect("valid config");
        let system =
            ModuleSystem::new(host, Arc::clone(module), &mut db, Identity::default()).expect("instantiates");
        let ticker = Ticker::new(db, system, Box::new(SystemClock), Box::new(SplitMix64::new(1)));
        let (reply_to, replies) = mpsc::channel();
        let mut bench = Bench { module: Arc::clone(module), ticker, replies, reply_to };
        let join = bench.reducer("join");
        let joins: Vec<_> = (0..PLAYERS)
            .map(|i| (join, identity(i), (format!("player{i}"), (i % 64) as u32).to_bytes()))
            .collect();
        for chunk in joins.chunks(BATCH) {
            bench.tick(chunk);
        }
        assert_eq!(bench.ticker.db().tables().map(|t| t.len()).sum::<usize>(), PLAYERS);
        bench
    }

    fn reducer(&self, name: &str) -> u32 {
        self.module.reducer_id(name).expect("the bench module has it")
    }

    /// Runs one tick of calls; checks every reply.
    fn tick(&mut self, calls: &[(u32, Identity, Vec<u8>)]) -> Duration {
        let conn = ConnectionId([1; 16]);
        let works = calls.iter().enumerate().map(|(i, (reducer, who, args))| {
            let reply = ReplyTo { id: i as u64, to: self.reply_to.clone() };
            ModuleWork::call(*reducer, *who, conn, args, Some(reply))
        });
        let works: Vec<_> = works.collect();
        let started = Instant::now();
        let output = self.ticker.run_tick(works, false);
        let mut answered = 0;
        for reply in self.replies.try_iter() {
            assert!(reply.outcome.is_ok(), "{:?}", reply.outcome);
            answered += 1;
        }
        let elapsed = started.elapsed();
        assert_eq!((answered, output.rolled_back), (calls.len(), 0));
        elapsed
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid bounds")
}

fn calls_for(bench: &Bench, name: &str, round: usize) -> Vec<(u32, Identity, Vec<u8>)> {
    let reducer = bench.reducer(name);
    (0..BATCH)
        .map(|i| {
            let who = identity((round * BATCH + i) % PLAYERS);
            let args = match name {
                "empty" => Vec::new(),
                "insert_item" => ((round * BATCH + i) as u64).to_bytes(),
                _ => (i as f32, round as f32).to_bytes(),
            };
            (reducer, who, args)
        })
        .collect()
}

/// Ticks of 4,096 calls on this thread: per-call time of each tick.
fn ticker_throughput(host: &ModuleHost, module: &Arc<LoadedModule>) {
    println!("\n### Reducer calls, ticks of {BATCH} calls run by the Ticker on one thread\n");
    println!("| reducer | ticks | ns/call p50 | p90 | p99 | calls/s at p50 |");
    println!("|---|---|---|---|---|---|");
    let only = std::env::var("TICKDB_BENCH_REDUCER").ok();
    for name in ["empty", "insert_item", "move_to"] {
        if only.as_deref().is_some_and(|only| only != name) {
            continue;
        }
        let mut bench = Bench::new(host, module);
        let mut h = histogram();
        let rounds = if only.is_some() { 600 } else { 60 };
        for round in 0..rounds {
            let calls = calls_for(&bench, name, round);
            let elapsed = bench.tick(&calls);
            if round >= 10 {
                h.saturating_record(elapsed.as_nanos() as u64 / BATCH as u64);
            }
        }
        let p50 = h.value_at_quantile(0.5);
        let per_second = 1e9 / p50 as f64;
        let q = |q| h.value_at_quantile(q);
        println!("| {name} | {} | {p50} | {} | {} | {:.2}M |", h.len(), q(0.9), q(0.99), per_second / 1e6);
    }
}

/// The threaded tick loop fed from this thread: a million calls, each reply received,
/// submitted one by one and in batches (as a network thread that read many would).
fn loop_throughput(host: &ModuleHost, module: &Arc<LoadedModule>) {
    const CALLS: usize = 1_000_000;
    const IN_FLIGHT: usize = 8192;
    println!("\n### Reducer calls through the threaded tick loop ({CALLS} calls, {IN_FLIGHT} in flight)\n");
    println!("| reducer | submitted | runs | calls/s median | min | max |");
    println!("|---|---|---|---|---|---|");
    for name in ["empty", "insert_item", "move_to"] {
        for batch in [1, 256] {
            let mut rates = Vec::new();
            for _ in 0..5 {
                rates.push(loop_run(host, module, name, batch, CALLS, IN_FLIGHT));
            }
            rates.sort_by(f64::total_cmp);
            let m = |r: f64| format!("{:.2}M", r / 1e6);
            let how = if batch == 1 { "one by one".to_string() } else { format!("batches of {batch}") };
            let (mid, lo, hi) = (m(rates[rates.len() / 2]), m(rates[0]), m(rates[rates.len() - 1]));
            println!("| {name} | {how} | {} | {mid} | {lo} | {hi} |", rates.len());
        }
    }
}

/// One run: calls per second.
fn loop_run(
    host: &ModuleHost,
    module: &Arc<LoadedModule>,
    name: &str,
    batch: usize,
    calls: usize,
    in_flight: usize,
) -> f64 {
    let bench = Bench::new(host, module);
    let rounds: Vec<_> = (0..calls / BATCH + 1).map(|round| calls_for(&bench, name, round)).collect();
    let Bench { ticker, replies, reply_to, .. } = bench;
    let handle = TickLoop::spawn(ticker, (), &EngineConfig::default()).expect("loop starts");
    drive(handle, &rounds, &replies, &reply_to, batch, calls, in_flight)
}

/// Feeds `calls` calls from `rounds` to a running loop and receives every reply;
/// returns calls per second.
fn drive(
    handle: TickHandle<ModuleWork>,
    rounds: &[Vec<(u32, Identity, Vec<u8>)>],
    replies: &mpsc::Receiver<CallReply>,
    reply_to: &mpsc::Sender<CallReply>,
    batch: usize,
    calls: usize,
    in_flight: usize,
) -> f64 {
    let conn = ConnectionId([1; 16]);
    let mut pending = rounds.iter().flatten().take(calls).enumerate().map(|(i, (reducer, who, args))| {
        let reply = ReplyTo { id: i as u64, to: reply_to.clone() };
        ModuleWork::call(*reducer, *who, conn, args, Some(reply))
    });
    let started = Instant::now();
    let (mut sent, mut received) = (0usize, 0usize);
    while received < calls {
        // In flight stays below the inbox's capacity, so submitting never fails.
        while sent < calls && sent - received < in_flight {
            let mut works: Vec<ModuleWork> = pending.by_ref().take(batch).collect();
            sent += works.len();
            let submitted = match works.len() {
                1 => handle.submit(works.pop().expect("one call")),
                _ => handle.submit_batch(works),
            };
            submitted.expect("the inbox has room");
        }
        let reply = replies.recv().expect("the loop runs");
        assert!(reply.outcome.is_ok(), "{:?}", reply.outcome);
        received += 1;
    }
    let rate = calls as f64 / started.elapsed().as_secs_f64();
    drop(handle.shutdown());
    rate
}

/// The commit log's cost: the same calls with no log, in relaxed mode (replies after
/// the tick commits, the log written behind) and in confirmed mode (replies after the
/// tick is durable); then replaying the confirmed log of `insert_item`.
fn durability(host: &ModuleHost, module: &Arc<LoadedModule>) {
    const CALLS: usize = 300_000;
    const IN_FLIGHT: usize = 8192;
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/durability-bench");
    println!(
        "\n### Reducer calls with the commit log ({CALLS} calls, {IN_FLIGHT} in flight, threaded loop)\n"
    );
    println!("| reducer | log | runs | calls/s median | of no log |");
    println!("|---|---|---|---|---|");
    for name in ["insert_item", "move_to"] {
        let mut baseline = 0.0;
        for mode in [None, Some(Durability::Relaxed), Some(Durability::Confirmed)] {
            let mut rates = Vec::new();
            for _ in 0..7 {
                let _ = std::fs::remove_dir_all(&dir);
                let bench = Bench::new(host, module);
                let rounds: Vec<_> =
                    (0..CALLS / BATCH + 1).map(|round| calls_for(&bench, name, round)).collect();
                let Bench { mut ticker, replies, reply_to, .. } = bench;
                let rate = match mode {
                    None => {
                        let handle = TickLoop::spawn(ticker, (), &EngineConfig::default()).expect("loop");
                        drive(handle, &rounds, &replies, &reply_to, 1, CALLS, IN_FLIGHT)
                    }
                    Some(mode) => {
                        ticker.keep_log();
                        let end = LogEnd { segment: None, last_tick: None, next_tx: 0, truncated: None };
                        let sink = DurableSink::open(&dir, &end, LogConfig::default(), mode).expect("log");
                        let handle = TickLoop::spawn(ticker, sink, &EngineConfig::default()).expect("loop");
                        drive(handle, &rounds, &replies, &reply_to, 1, CALLS, IN_FLIGHT)
                    }
                };
                rates.push(rate);
            }
            rates.sort_by(f64::total_cmp);
            let median = rates[rates.len() / 2];
            if mode.is_none() {
                baseline = median;
            }
            let label = match mode {
                None => "none",
                Some(Durability::Relaxed) => "relaxed",
                Some(Durability::Confirmed) => "confirmed",
            };
            let share = 100.0 * median / baseline;
            println!("| {name} | {label} | {} | {:.2}M | {share:.0}% |", rates.len(), median / 1e6);
        }
        if name == "insert_item" {
            // The last run's confirmed log: replay it into a new database.
            let mut db = Database::new(EngineConfig::default()).expect("db");
            let _system =
                ModuleSystem::new(host, Arc::clone(module), &mut db, Identity::default()).expect("system");
            let started = Instant::now();
            let replayed = replay(&dir, &mut db, None).expect("replay");
            let elapsed = started.elapsed().as_secs_f64();
            println!(
                "\nReplay of that log: {} ticks, {} transactions, {} row changes in {:.0} ms: {:.2}M row changes/s\n",
                replayed.ticks,
                replayed.transactions,
                replayed.rows,
                elapsed * 1e3,
                replayed.rows as f64 / elapsed / 1e6
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Restart time of a database of 1M rows: a snapshot at 900,000 rows and 100,000
/// more in the log after it.
fn restart(host: &ModuleHost, module: &Arc<LoadedModule>) {
    const ROWS: usize = 1_000_000;
    const SNAPSHOT_AT: usize = 900_000;
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/restart-bench");
    let _ = std::fs::remove_dir_all(&dir);
    let (snapshots, log) = (dir.join("snapshots"), dir.join("log"));
    let mut db = Database::new(EngineConfig::default()).expect("db");
    let system = ModuleSystem::new(host, Arc::clone(module), &mut db, Identity::default()).expect("system");
    let mut ticker = Ticker::new(db, system, Box::new(SystemClock), Box::new(SplitMix64::new(1)));
    ticker.keep_log();
    let end = LogEnd { segment: None, last_tick: None, next_tx: 0, truncated: None };
    let sink = DurableSink::open(&log, &end, LogConfig::default(), Durability::Relaxed).expect("log");
    let watch = sink.watch();
    let handle = TickLoop::spawn(ticker, sink, &EngineConfig::default()).expect("loop");
    let insert = module.reducer_id("insert_item").expect("reducer");
    let (to, replies) = mpsc::channel();
    let conn = ConnectionId([1; 16]);
    let submit = |from: usize, to_row: usize| {
        for start in (from..to_row).step_by(BATCH) {
            let works = (start..(start + BATCH).min(to_row))
                .map(|i| {
                    let reply = Some(ReplyTo { id: i as u64, to: to.clone() });
                    ModuleWork::call(insert, Identity::default(), conn, &(i as u64).to_le_bytes(), reply)
                })
                .collect();
            handle.submit_batch(works).expect("room");
            if start >= BATCH * 2 {
                // Keep a few batches in flight.
                for _ in 0..BATCH {
                    replies.recv().expect("reply");
                }
            }
        }
    };
    submit(0, SNAPSHOT_AT);
    while replies.try_recv().is_ok() {}
    let snapshot_started = Instant::now();
    tickdb_engine::snapshot::take(&handle, &watch, &snapshots).expect("snapshot");
    let snapshot_time = snapshot_started.elapsed();
    submit(SNAPSHOT_AT, ROWS);
    let db = handle.shutdown().expect("shutdown");
    let rows = db.table(db.table_id("item").expect("item")).len();
    drop(db);

    let started = Instant::now();
    let mut db = Database::new(EngineConfig::default()).expect("db");
    let _system = ModuleSystem::new(host, Arc::clone(module), &mut db, Identity::default()).expect("system");
    let recovered = tickdb_engine::recover(&snapshots, &log, &mut db).expect("recover");
    let elapsed = started.elapsed();
    let restored = db.table(db.table_id("item").expect("item")).len();
    assert_eq!(restored, rows);
    println!("\n### Restart of a {rows}-row database: snapshot at {SNAPSHOT_AT} rows, the rest in the log\n");
    println!("| step | time |");
    println!("|---|---|");
    println!(
        "| take the snapshot (capture on the tick thread, write, fsync, rename) | {:.0} ms |",
        snapshot_time.as_secs_f64() * 1e3
    );
    println!(
        "| restart: load the snapshot ({} rows) and replay {} transactions | {:.0} ms |",
        recovered.snapshot.map_or(0, |(_, l)| l.rows),
        recovered.replayed.transactions,
        elapsed.as_secs_f64() * 1e3
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Does nothing, as a native system: the cost of a transaction in the tick loop
/// without a module.
struct Noop;

impl TickSystem for Noop {
    type Work = ();
    fn run_work(&mut self, _: &mut Tx<'_>, _: &mut TickContext<'_>, _: ()) -> Result<(), String> {
        Ok(())
    }
}

/// Host-to-guest: an empty reducer's call against an empty native transaction, per
/// call, in ticks of 4,096.
fn host_to_guest(host: &ModuleHost, module: &Arc<LoadedModule>) -> (f64, f64) {
    let mut bench = Bench::new(host, module);
    let db = Database::new(EngineConfig::default()).expect("valid config");
    let mut native = Ticker::new(db, Noop, Box::new(SystemClock), Box::new(SplitMix64::new(1)));
    let (mut wasm, mut noop) = (histogram(), histogram());
    for round in 0..60 {
        let calls = calls_for(&bench, "empty", round);
        let elapsed = bench.tick(&calls);
        let started = Instant::now();
        native.run_tick(std::iter::repeat_n((), BATCH), false);
        let native_elapsed = started.elapsed();
        if round >= 10 {
            wasm.saturating_record(elapsed.as_nanos() as u64 / BATCH as u64);
            noop.saturating_record(native_elapsed.as_nanos() as u64 / BATCH as u64);
        }
    }
    (wasm.value_at_quantile(0.5) as f64, noop.value_at_quantile(0.5) as f64)
}

/// Guest-to-host: a call making 100,000 host calls against one making none.
fn guest_to_host(host: &ModuleHost, module: &Arc<LoadedModule>) {
    const N: u32 = 100_000;
    let mut bench = Bench::new(host, module);
    let reducer = bench.reducer("host_calls");
    let mut per_call = Vec::new();
    for _ in 0..21 {
        let zero = bench.tick(&[(reducer, identity(0), 0u32.to_bytes())]);
        let many = bench.tick(&[(reducer, identity(0), N.to_bytes())]);
        per_call.push(many.saturating_sub(zero).as_nanos() as f64 / f64::from(N));
    }
    per_call.sort_by(f64::total_cmp);
    println!("\n### Call overheads\n");
    println!("| what | median | min | max |");
    println!("|---|---|---|---|");
    let (mid, lo, hi) = (per_call[per_call.len() / 2], per_call[0], per_call[per_call.len() - 1]);
    println!("| guest-to-host call (`row_count`), ns | {mid:.1} | {lo:.1} | {hi:.1} |");
    let (wasm, native) = host_to_guest(host, module);
    println!("| empty reducer call, whole (tick loop, transaction, reply), ns p50 | {wasm:.0} | | |");
    println!("| empty native transaction in the tick loop, ns p50 | {native:.0} | | |");
    println!("| host-to-guest (the difference), ns | {:.0} | | |", wasm - native);
}

fn load_times() {
    let bytes = wasm("tickdb-example-chat");
    let dir = std::env::temp_dir().join(format!("tickdb-bench-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let median_ms = |mut times: Vec<Duration>| {
        times.sort();
        times[times.len() / 2].as_secs_f64() * 1e3
    };
    let compile: Vec<_> = (0..5)
        .map(|_| {
            let host = ModuleHost::new(HostConfig::default()).expect("host");
            let module = host.load(&bytes).expect("loads");
            assert!(!module.from_cache);
            module.load_time
        })
        .collect();
    let config = HostConfig { cache_dir: Some(dir.clone()), ..HostConfig::default() };
    let host = ModuleHost::new(config).expect("host");
    host.load(&bytes).expect("fills the cache");
    let cached: Vec<_> = (0..21)
        .map(|_| {
            let module = host.load(&bytes).expect("loads");
            assert!(module.from_cache);
            module.load_time
        })
        .collect();
    std::fs::remove_dir_all(&dir).expect("cleanup");
    println!(
        "\n### Loading `examples/chat` ({} KB of wasm): compile or cache, then describe\n",
        bytes.len() / 1024
    );
    println!("| load | runs | median ms |");
    println!("|---|---|---|");
    println!("| compile (Cranelift) | {} | {:.1} |", compile.len(), median_ms(compile.clone()));
    println!("| cached artefact | {} | {:.2} |", cached.len(), median_ms(cached.clone()));
}

/// Sections run: all, or those named on the command line (`ticker`, `overhead`, `loop`,
/// `load`, `durability`, `restart`), e.g. `cargo bench -p tickdb-benches --bench modules -- ticker`.
fn main() {
    let names: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let run = |section: &str| names.is_empty() || names.iter().any(|n| n == section);
    let host = ModuleHost::new(HostConfig::default()).expect("host starts");
    let module = host.load(&wasm("tickdb-test-bench")).expect("the bench module loads");
    if run("ticker") {
        ticker_throughput(&host, &module);
    }
    if run("overhead") {
        guest_to_host(&host, &module);
    }
    if run("loop") {
        loop_throughput(&host, &module);
    }
    if run("load") {
        load_times();
    }
    if run("durability") {
        durability(&host, &module);
    }
    if run("restart") {
        restart(&host, &module);
    }
}

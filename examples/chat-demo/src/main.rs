//! Publishes the quickstart chat module (`examples/chat`) into a database kept in
//! `target/chat-data` and talks to it: two clients connect, name themselves and chat,
//! one sends a message the module refuses, and one disconnects. Every call runs as a
//! transaction in the tick loop, and its reply comes once its tick is durable in the
//! commit log. The example prints each reply, then the tables (through SQL) and the
//! module's log. Run it again: the database comes back from its log, messages and all.
//!
//! It builds the module for `wasm32-unknown-unknown` first (adding the target with
//! rustup if it is missing), and caches the compiled module in the data directory, so
//! the second run skips compilation.
//!
//! Run with `cargo run --release -p tickdb-chat-demo`. There is no network
//! server yet: the clients here are calls submitted to the database's tick loop.

use std::sync::mpsc;
use std::time::Instant;

use tickdb::Type;
use tickdb_engine::commitlog::LogConfig;
use tickdb_engine::store::DataDir;
use tickdb_engine::{
    CallReply, Durability, DurableSink, EngineConfig, HostConfig, ModuleHost, ModuleWork, ReplyTo,
    SplitMix64, SystemClock, TickLoop,
};
use tickdb_sql::QueryLimits;
use tickdb_wasm_abi::{ConnectionId, Identity, Lifecycle};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let wasm = tickdb_test_modules::wasm("tickdb-example-chat");
    println!("built examples/chat: {} KB of wasm in {:.1?}", wasm.len() / 1024, started.elapsed());

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/chat-data");
    std::fs::create_dir_all(&root)?;
    let data = DataDir::new(root.canonicalize()?);
    let owner = Identity([0x0E; 32]);
    if !data.list()?.iter().any(|db| db.name == "chat") {
        data.create("chat", owner, &wasm)?;
        println!("published database `chat` in {}", data.database_dir("chat").display());
    }
    let meta = data.list()?.into_iter().find(|db| db.name == "chat").expect("created above");
    let host = ModuleHost::new(HostConfig { cache_dir: Some(data.module_cache()), ..HostConfig::default() })?;
    let restored = data.restore(
        &host,
        &meta,
        EngineConfig::default(),
        Box::new(SystemClock),
        Box::new(SplitMix64::from_os()),
    )?;
    let module = restored.module;
    let how = if module.from_cache { "loaded from the cache" } else { "compiled" };
    println!("module {how} in {:.1?}", module.load_time);
    println!(
        "recovered: {} transactions replayed from the log{}",
        restored.recovered.replayed.transactions,
        restored
            .recovered
            .snapshot
            .as_ref()
            .map(|(p, _)| format!(", on top of {}", p.display()))
            .unwrap_or_default()
    );
    for reducer in &module.def.reducers {
        let params: Vec<String> =
            reducer.params.fields.iter().map(|f| format!("{}: {}", f.name, f.ty)).collect();
        let lifecycle = reducer.lifecycle.map(|l| format!(" ({l:?})")).unwrap_or_default();
        println!("  reducer {}({}){lifecycle}", reducer.name, params.join(", "));
    }

    let logs = restored.ticker.system().logs();
    let sink = DurableSink::open(
        &data.log("chat"),
        &restored.recovered.end,
        LogConfig::default(),
        Durability::Confirmed,
    )?;
    let handle = TickLoop::spawn(restored.ticker, sink, &EngineConfig::default())?;

    let (reply_to, replies) = mpsc::channel::<CallReply>();
    let ada = (Identity([0xA1; 32]), ConnectionId([1; 16]));
    let bo = (Identity([0xB0; 32]), ConnectionId([2; 16]));
    let mut id = 0;
    let call = |who: (Identity, ConnectionId), what: &str, work: ModuleWork| {
        handle.submit(work).expect("the database takes work");
        let reply = replies.recv().expect("every call is answered");
        let outcome = match reply.outcome {
            Ok(_) => "ok".to_string(),
            Err(e) => format!("error: {e}"),
        };
        println!("  tick {:>3}  {} {what}: {outcome}", reply.tick.0, &who.0.to_string()[..8]);
    };
    let mut reducer = |who: (Identity, ConnectionId), name: &str, args: Vec<u8>| {
        id += 1;
        let reply = Some(ReplyTo { id, to: reply_to.clone() });
        let reducer = module.reducer_id(name).expect("the chat module has it");
        (who, name.to_string(), ModuleWork::call(reducer, who.0, who.1, &args, reply))
    };
    let lifecycle = |who: (Identity, ConnectionId), which: Lifecycle| {
        let reply = Some(ReplyTo { id: 0, to: reply_to.clone() });
        (who, format!("{which:?}"), ModuleWork::lifecycle(which, who.0, who.1, reply))
    };

    println!("\ncalls (each reply after its tick is on disk):");
    let script = vec![
        lifecycle(ada, Lifecycle::ClientConnected),
        lifecycle(bo, Lifecycle::ClientConnected),
        reducer(ada, "set_name", "Ada".to_string().to_bytes()),
        reducer(bo, "set_name", "Bo".to_string().to_bytes()),
        reducer(ada, "send_message", "hello, Bo".to_string().to_bytes()),
        reducer(bo, "send_message", "hi Ada! first tick-based chat?".to_string().to_bytes()),
        reducer(bo, "send_message", "   ".to_string().to_bytes()),
        reducer(ada, "set_name", String::new().to_bytes()),
        lifecycle(bo, Lifecycle::ClientDisconnected),
    ];
    for (who, what, work) in script {
        call(who, &what, work);
    }

    for sql in [
        "SELECT name, online FROM user",
        "SELECT COUNT(*) AS messages FROM message",
        "SELECT u.name, m.text FROM message m JOIN user u ON u.identity = m.sender ORDER BY m.sent DESC LIMIT 4",
    ] {
        let sql = sql.to_string();
        let result =
            handle.read(move |db| tickdb_sql::query(db, &sql, &QueryLimits::default()).map(|r| (sql, r)))?;
        let (sql, result) = result?;
        println!("\n{sql}");
        let names: Vec<&str> = result.columns.iter().map(|(n, _)| n.as_str()).collect();
        println!("  {}", names.join(" | "));
        for row in &result.rows {
            let values: Vec<String> = row.iter().map(ToString::to_string).collect();
            println!("  {}", values.join(" | "));
        }
    }
    handle.shutdown();
    println!("\nmodule log:");
    for line in logs.recent(20) {
        let reducer = line.reducer.as_deref().unwrap_or("-");
        println!("  {} [{}] {}: {}", line.level_name(), reducer, line.target, line.message);
    }
    println!("\ndata kept in {}; run again to see it come back", data.database_dir("chat").display());
    Ok(())
}

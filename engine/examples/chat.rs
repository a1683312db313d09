//! Publishes the quickstart chat module (`examples/chat`) into an in-process database
//! and talks to it: two clients connect, name themselves and chat, one sends a message
//! the module refuses, and one disconnects. Every call runs as a transaction in the
//! tick loop; the example prints each reply, then the tables and the module's log.
//!
//! It builds the module for `wasm32-unknown-unknown` first (install the target with
//! `rustup target add wasm32-unknown-unknown`), and caches the compiled module in
//! `target/module-cache`, so the second run skips compilation.
//!
//! Run with `cargo run --release -p tickdb-engine --example chat`. There is no network
//! server yet: the clients here are calls submitted to the database's tick loop.

use std::sync::{Arc, mpsc};
use std::time::Instant;

use tickdb::Type;
use tickdb_engine::{
    CallReply, Database, EngineConfig, HostConfig, ModuleHost, ModuleSystem, ModuleWork, ReplyTo, SplitMix64,
    SystemClock, TickLoop, Ticker,
};
use tickdb_wasm_abi::{ConnectionId, Identity, Lifecycle};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let wasm = tickdb_test_modules::wasm("tickdb-example-chat");
    println!("built examples/chat: {} KB of wasm in {:.1?}", wasm.len() / 1024, started.elapsed());

    let cache = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/module-cache");
    let host = ModuleHost::new(HostConfig { cache_dir: Some(cache), ..HostConfig::default() })?;
    let module = host.load(&wasm)?;
    let how = if module.from_cache { "loaded from the cache" } else { "compiled" };
    println!("published: {how} in {:.1?}", module.load_time);
    for reducer in &module.def.reducers {
        let params: Vec<String> =
            reducer.params.fields.iter().map(|f| format!("{}: {}", f.name, f.ty)).collect();
        let lifecycle = reducer.lifecycle.map(|l| format!(" ({l:?})")).unwrap_or_default();
        println!("  reducer {}({}){lifecycle}", reducer.name, params.join(", "));
    }

    let mut db = Database::new(EngineConfig::default())?;
    let system = ModuleSystem::new(&host, Arc::clone(&module), &mut db, Identity([0xDB; 32]))?;
    let logs = system.logs();
    let ticker = Ticker::new(db, system, Box::new(SystemClock), Box::new(SplitMix64::from_os()));
    let handle = TickLoop::spawn(ticker, (), &EngineConfig::default())?;

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
        println!("  tick {:>2}  {} {what}: {outcome}", reply.tick.0, &who.0.to_string()[..8]);
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

    println!("\ncalls:");
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

    let tables = handle.read(|db| {
        db.tables()
            .map(|t| {
                let columns: Vec<&str> = t.schema().columns.iter().map(|c| c.name.as_str()).collect();
                let row = |values: Vec<tickdb_wasm_abi::Value>| {
                    values.iter().map(ToString::to_string).collect::<Vec<_>>().join(" | ")
                };
                let rows: Vec<String> = t.iter().map(|r| row(r.to_values())).collect();
                (format!("{} ({})", t.name(), columns.join(" | ")), rows)
            })
            .collect::<Vec<_>>()
    })?;
    for (name, rows) in tables {
        println!("\ntable {name}, {} rows:", rows.len());
        rows.iter().for_each(|r| println!("  {r}"));
    }
    println!("\nmodule log:");
    for line in logs.recent(20) {
        let reducer = line.reducer.as_deref().unwrap_or("-");
        println!("  {} [{}] {}: {}", line.level_name(), reducer, line.target, line.message);
    }
    handle.shutdown();
    Ok(())
}

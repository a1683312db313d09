//! The quickstart: builds the chat module (`examples/chat`), starts a tickdb server on
//! 127.0.0.1 with its data in `target/chat-server`, publishes the module over the HTTP
//! API, and has two clients chat through the Rust client SDK with the bindings
//! `tickdb generate` wrote for the module (`examples/chat/client/src/bindings`):
//!
//! - Ada subscribes to the users and messages; her client cache fills, and her
//!   callbacks print every change as its tick arrives.
//! - Bo names himself, chats, sends a message the module refuses, and leaves; each
//!   reducer's result comes back once its tick is on disk.
//! - Then the owner reads the tables with SQL and the module's log over HTTP.
//!
//! Both clients are driven the way a game drives them: `frame_tick` once per frame of
//! a loop. Run it again: the server restores the database from its log, the clients
//! keep their identities (their tokens are kept in the data directory), and the
//! earlier messages are still there.
//!
//! Run with `cargo run --release -p tickdb-chat-demo`. It builds the module for
//! `wasm32-unknown-unknown` first (adding the target with rustup if it is missing).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tickdb_engine::store::DataDir;
use tickdb_sdk::{DbConnection, Event};

#[path = "../../chat/client/src/bindings/mod.rs"]
#[rustfmt::skip]
mod bindings;

use bindings::{RemoteReducers, Tables};

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let started = Instant::now();
    let wasm = tickdb_test_modules::wasm("tickdb-example-chat");
    println!("built examples/chat: {} KB of wasm in {:.1?}", wasm.len() / 1024, started.elapsed());

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/chat-server");
    std::fs::create_dir_all(&root)?;
    let root = root.canonicalize()?;
    let started = Instant::now();
    let server =
        tickdb_net::start(tickdb_net::ServerConfig::default(), DataDir::new(&root), "127.0.0.1:0".parse()?)?;
    let addr = server.addr();
    println!("server listening on {addr}, data in {} (started in {:.1?})", root.display(), started.elapsed());

    let owner = token(addr, &root.join("owner.token"))?;
    let published = http(addr, "POST", "/v1/database/chat", Some(&owner), &wasm)?;
    println!("publish `chat`: {}", published["outcome"].as_str().unwrap_or("?"));

    let ada = connect(addr, "Ada", &root.join("ada.token"))?;
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let s = Arc::clone(&seen);
    ada.db().message().on_insert(move |ctx, m| {
        if matches!(ctx.event, Event::Tick { .. }) {
            let sender = ctx.db().user().identity().find(&m.sender).and_then(|u| u.name);
            println!("  Ada sees a message from {}: {}", sender.as_deref().unwrap_or("?"), m.text);
            s.lock().expect("not poisoned").push(m.text.clone());
        }
    });
    ada.db().user().on_update(|_, old, new| {
        println!(
            "  Ada sees a user change: {:?} online={} -> {:?} online={}",
            old.name, old.online, new.name, new.online
        );
    });
    let applied = Arc::new(Mutex::new(false));
    let a = Arc::clone(&applied);
    ada.subscription_builder()
        .on_applied(move |ctx| {
            let messages = ctx.db().message().count();
            let online = ctx.db().user().iter().filter(|u| u.online).count();
            println!("Ada subscribed: {messages} earlier message(s) in her cache, {online} user(s) online");
            *a.lock().expect("not poisoned") = true;
        })
        .subscribe(["SELECT * FROM user", "SELECT * FROM message"]);
    frames(&[&ada], || *applied.lock().expect("not poisoned"))?;
    ada.reducers().set_name("Ada".into())?;

    let bo = connect(addr, "Bo", &root.join("bo.token"))?;
    println!("\nBo's calls, each result sent once its tick is on disk:");
    let hello = format!(
        "hi Ada! tick-based chat, at {} s past the epoch",
        std::time::UNIX_EPOCH.elapsed()?.as_secs()
    );
    let results = Arc::new(Mutex::new(0));
    let report = |what: &'static str| {
        let results = Arc::clone(&results);
        move |ctx: &tickdb_sdk::EventContext<'_>, outcome: Result<(), String>| {
            let tick = match ctx.event {
                Event::ReducerResult { tick } => tick,
                _ => 0,
            };
            match outcome {
                Ok(()) => println!("  {what}: ok (tick {tick})"),
                Err(e) => println!("  {what}: error: {e}"),
            }
            *results.lock().expect("not poisoned") += 1;
        }
    };
    bo.reducers().set_name_then("Bo".into(), report("set_name"))?;
    bo.reducers().send_message_then(hello.clone(), report("send_message"))?;
    bo.reducers().send_message_then("   ".into(), report("send_message"))?;
    frames(&[&ada, &bo], || {
        *results.lock().expect("not poisoned") == 3 && seen.lock().expect("not poisoned").contains(&hello)
    })?;
    bo.disconnect();
    let bo_identity = bo.identity();
    frames(&[&ada, &bo], || {
        bo_identity.and_then(|id| ada.db().user().identity().find(&id)).is_some_and(|u| !u.online)
    })?;
    println!("Bo left.");

    println!("\nthe owner's SQL over HTTP:");
    for sql in [
        "SELECT name, online FROM user",
        "SELECT u.name, m.text FROM message m JOIN user u ON u.identity = m.sender ORDER BY m.sent DESC LIMIT 4",
    ] {
        let result = http(addr, "POST", "/v1/database/chat/sql", Some(&owner), sql.as_bytes())?;
        println!("  {sql}\n    {}", result["rows"]);
    }
    let logs = http(addr, "GET", "/v1/database/chat/logs?n=5", Some(&owner), b"")?;
    println!("\nmodule log (last lines):");
    for line in logs["lines"].as_array().into_iter().flatten() {
        let text = |key: &str| line[key].as_str().unwrap_or("-").to_string();
        println!("  {} [{}] {}", text("level"), text("reducer"), text("message"));
    }
    ada.disconnect();
    server.stop();
    println!("\ndata kept in {}; run again to see it come back", root.display());
    println!(
        "next: `cargo run -p tickdb-cli -- dev -p examples/chat` and `cargo run -p tickdb-example-chat-client`"
    );
    Ok(())
}

/// Connects a chat client as the identity whose token is kept at `path` (saving a
/// new identity's token there).
fn connect(addr: SocketAddr, who: &'static str, path: &Path) -> Result<DbConnection, Error> {
    let token = std::fs::read_to_string(path).ok();
    let path = path.to_path_buf();
    let conn = DbConnection::builder(bindings::tables())
        .with_uri(format!("http://{addr}"))
        .with_database_name("chat")
        .with_token(token)
        .on_connect(move |_, identity, token| {
            println!("{who}: connected as {}", &identity.to_string()[..16]);
            let _ = std::fs::write(&path, token);
        })
        .on_error(move |_, e| eprintln!("{who}: {e}"))
        .build()?;
    Ok(conn)
}

/// Runs frames, each applying what every client received, until `done` (at most 10 s).
fn frames(clients: &[&DbConnection], mut done: impl FnMut() -> bool) -> Result<(), Error> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        if Instant::now() > deadline {
            return Err("the server did not answer within 10 s".into());
        }
        clients[0].frame_tick_wait(Duration::from_millis(5));
        clients[1..].iter().for_each(|c| c.frame_tick());
    }
    Ok(())
}

/// The token kept at `path`, or a new identity's (kept there for the next run).
fn token(addr: SocketAddr, path: &Path) -> Result<String, Error> {
    if let Ok(token) = std::fs::read_to_string(path) {
        return Ok(token);
    }
    let token =
        http(addr, "POST", "/v1/identity", None, b"")?["token"].as_str().ok_or("no token")?.to_string();
    std::fs::write(path, &token)?;
    Ok(token)
}

fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> Result<serde_json::Value, Error> {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let url = format!("http://{addr}{path}");
    let auth = token.map(|t| format!("Bearer {t}")).unwrap_or_default();
    let mut response = match method {
        "POST" => agent.post(&url).header("Authorization", &auth).send(body)?,
        _ => agent.get(&url).header("Authorization", &auth).call()?,
    };
    let json: serde_json::Value = response.body_mut().read_json()?;
    if !response.status().is_success() {
        return Err(format!("{method} {path}: {}", json["error"]).into());
    }
    Ok(json)
}

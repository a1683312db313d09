//! The quickstart: builds the chat module (`examples/chat`), starts a tickdb server on
//! 127.0.0.1 with its data in `target/chat-server`, publishes the module over the HTTP
//! API, and talks to it the way game clients do, over WebSocket:
//!
//! - Ada connects with the JSON protocol (`?format=json`) and subscribes to the users
//!   and messages; every change reaches her as a tick update, printed as it arrives.
//! - Bo connects with the binary protocol (FlatBuffers), names himself, chats, sends a
//!   message the module refuses, and leaves; each reducer result is printed.
//! - Then the owner reads the tables with SQL and the module's log over HTTP.
//!
//! Run it again: the server restores the database from its log, the owner and the
//! clients keep their identities (their tokens are kept in the data directory), and
//! the earlier messages are still there.
//!
//! Run with `cargo run --release -p tickdb-chat-demo`. It builds the module for
//! `wasm32-unknown-unknown` first (adding the target with rustup if it is missing).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;

use tickdb::Type;
use tickdb_engine::store::DataDir;
use tickdb_protocol::{ClientMessage, Compression, ServerMessage, frame, unframe};
use tungstenite::Message;
use tungstenite::stream::MaybeTlsStream;

type Socket = tungstenite::WebSocket<MaybeTlsStream<std::net::TcpStream>>;
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

    let mut ada = connect(addr, &token(addr, &root.join("ada.token"))?, "&format=json")?;
    println!("Ada: {}", read_text(&mut ada)?);
    let subscribe = r#"{"Subscribe": {"query_set_id": 1, "queries": ["SELECT * FROM user WHERE online = true", "SELECT * FROM message"]}}"#;
    ada.send(Message::Text(subscribe.into()))?;
    println!("Ada: {}", read_text(&mut ada)?);

    let mut bo = connect(addr, &token(addr, &root.join("bo.token"))?, "")?;
    match read_binary(&mut bo)? {
        ServerMessage::IdentityToken { identity, .. } => println!("Bo: connected as {}", hex(&identity)),
        other => println!("Bo: {other:?}"),
    }
    println!("Ada: {}", read_text(&mut ada)?);

    println!("\nBo's calls, each result sent once its tick is on disk:");
    let hello = format!(
        "hi Ada! tick-based chat, at {} s past the epoch",
        std::time::UNIX_EPOCH.elapsed()?.as_secs()
    );
    let calls = [
        ("set_name", "Bo".to_string().to_bytes()),
        ("send_message", hello.to_bytes()),
        ("send_message", "   ".to_string().to_bytes()),
    ];
    for (id, (reducer, args)) in calls.into_iter().enumerate() {
        let call = ClientMessage::CallReducer { request_id: id as u32, reducer: reducer.into(), args };
        bo.send(Message::Binary(frame(Compression::None, &call.encode()).into()))?;
        match read_binary(&mut bo)? {
            ServerMessage::ReducerResult { tick, outcome, duration_us, .. } => {
                let outcome = outcome.map_or_else(|e| format!("error: {e}"), |_| "ok".into());
                println!("  {reducer}: {outcome} (tick {tick}, {duration_us} µs)");
            }
            other => println!("  {other:?}"),
        }
    }
    println!("what Ada saw, until Bo's message:");
    loop {
        let update = read_text(&mut ada)?;
        println!("  {update}");
        if update.contains(&hello) {
            break;
        }
    }
    bo.close(None)?;
    println!("Bo left; Ada sees him go offline:\n  {}", read_text(&mut ada)?);

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
    server.stop();
    println!("\ndata kept in {}; run again to see it come back", root.display());
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

fn connect(addr: SocketAddr, token: &str, query: &str) -> Result<Socket, Error> {
    let (ws, _) =
        tungstenite::connect(format!("ws://{addr}/v1/database/chat/subscribe?token={token}{query}"))?;
    Ok(ws)
}

fn read_text(ws: &mut Socket) -> Result<String, Error> {
    loop {
        if let Message::Text(text) = ws.read()? {
            return Ok(text.to_string());
        }
    }
}

fn read_binary(ws: &mut Socket) -> Result<ServerMessage, Error> {
    loop {
        if let Message::Binary(bytes) = ws.read()? {
            return Ok(ServerMessage::decode(&unframe(&bytes, 64 << 20)?)?);
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

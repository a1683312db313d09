//! End to end: a server on an ephemeral port, the `tickdb` binary publishing and
//! querying, and client SDK connections (with the chat example's checked-in bindings)
//! seeing each other's changes through callbacks and their caches. Every wait is
//! for a condition, bounded by a deadline; none is a sleep.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tickdb_engine::store::DataDir;
use tickdb_sdk::{DbConnection, Event, Identity};

mod common;

use common::{temp_dir, until};

#[path = "../../examples/chat/client/src/bindings/mod.rs"]
#[rustfmt::skip]
mod bindings;

use bindings::{RemoteReducers, Tables};

/// Bindings of the test module that uses every kind of type.
#[path = "bindings/features/mod.rs"]
#[rustfmt::skip]
mod features;

fn start_server(dir: &Path, addr: SocketAddr) -> tickdb_net::ServerHandle {
    tickdb_net::start(tickdb_net::ServerConfig::default(), DataDir::new(dir), addr)
        .expect("the server starts")
}

/// The `tickdb` binary, acting with the config file `config` on the server at `addr`.
fn tickdb(config: &Path, addr: SocketAddr) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tickdb"));
    command.env("TICKDB_CONFIG", config).env("TICKDB_SERVER", format!("http://{addr}")).stdin(Stdio::null());
    command
}

fn run(command: &mut Command) -> Output {
    command.output().expect("tickdb runs")
}

/// Runs a command that must succeed; its stdout.
fn ok(command: &mut Command) -> String {
    let out = run(command);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{command:?} failed:\n{stdout}\n{stderr}");
    stdout.into_owned()
}

/// Runs a command that must fail; its stderr.
fn fails(command: &mut Command) -> String {
    let out = run(command);
    assert!(!out.status.success(), "{command:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn chat_wasm() -> PathBuf {
    tickdb_test_modules::wasm_path("tickdb-example-chat")
}

/// A chat client: what its callbacks saw.
struct Client {
    conn: DbConnection,
    messages: Arc<Mutex<Vec<String>>>,
    applied: Arc<Mutex<Vec<bool>>>,
    disconnects: Arc<Mutex<usize>>,
}

fn connect(addr: SocketAddr) -> Client {
    connect_with(addr, tickdb_sdk::Compression::None)
}

fn connect_with(addr: SocketAddr, compression: tickdb_sdk::Compression) -> Client {
    let messages = Arc::new(Mutex::new(Vec::new()));
    let applied = Arc::new(Mutex::new(Vec::new()));
    let disconnects = Arc::new(Mutex::new(0));
    let d = Arc::clone(&disconnects);
    let conn = DbConnection::builder(bindings::tables())
        .with_uri(format!("http://{addr}"))
        .with_database_name("chat")
        .with_compression(compression)
        .on_disconnect(move |_, why| {
            eprintln!("disconnected: {why:?}");
            *d.lock().unwrap() += 1;
        })
        .on_error(|_, e| eprintln!("client error: {e}"))
        .build()
        .expect("the client connects");
    let m = Arc::clone(&messages);
    conn.db().message().on_insert(move |_, message| m.lock().unwrap().push(message.text.clone()));
    let a = Arc::clone(&applied);
    conn.subscription_builder()
        .on_applied(move |ctx| {
            if let Event::SubscribeApplied { resumed, .. } = ctx.event {
                a.lock().unwrap().push(resumed);
            }
        })
        .subscribe(["SELECT * FROM user", "SELECT * FROM message"]);
    until(&conn, "the subscription", || !applied.lock().unwrap().is_empty());
    Client { conn, messages, applied, disconnects }
}

/// Calls `send_message` and waits for its result.
fn say(client: &Client, text: &str) -> Result<(), String> {
    let result = Arc::new(Mutex::new(None));
    let r = Arc::clone(&result);
    client
        .conn
        .reducers()
        .send_message_then(text.into(), move |_, outcome| *r.lock().unwrap() = Some(outcome))
        .expect("the call is sent");
    until(&client.conn, "a call's result", || result.lock().unwrap().is_some());
    result.lock().unwrap().take().expect("waited for it")
}

/// A TCP proxy whose connections the test can cut, to drop a client's connection
/// while the server runs on.
struct Proxy {
    addr: SocketAddr,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn to(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("an address");
        let open = Arc::new(Mutex::new(Vec::new()));
        let o = Arc::clone(&open);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(target) else { continue };
                let mut open = o.lock().unwrap();
                open.push(client.try_clone().unwrap());
                open.push(server.try_clone().unwrap());
                let pipe = |mut from: TcpStream, mut to: TcpStream| {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    })
                };
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        Proxy { addr, open }
    }

    fn cut(&self) {
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// The chat example end to end: publish with the CLI, two SDK clients chatting, the
/// CLI's `sql`, `call`, `logs`, `describe` and `subscribe` outputs, a client resuming
/// after its connection drops, and both reconnecting after the server restarts.
#[test]
fn the_chat_example_end_to_end() {
    let dir = temp_dir("chat");
    let config = dir.join("owner.json");
    let mut server = start_server(&dir.join("data"), "127.0.0.1:0".parse().unwrap());
    let addr = server.addr();
    let wasm = chat_wasm();

    let published = ok(tickdb(&config, addr).args(["publish", "chat", "--wasm"]).arg(&wasm));
    assert!(published.contains("created `chat`"), "{published}");
    let described = ok(tickdb(&config, addr).args(["describe", "chat"]));
    assert!(
        described.contains("send_message(text: String)") && described.contains("primary key (identity)"),
        "{described}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(tickdb(&config, addr).args(["describe", "chat", "--json"]))).unwrap();
    assert_eq!(json["tables"].as_array().map(Vec::len), Some(2));

    // Ada goes through a proxy, to have her connection cut later.
    let proxy = Proxy::to(addr);
    let ada = connect(proxy.addr);
    // Bo asks for compressed messages.
    let bo = connect_with(addr, tickdb_sdk::Compression::Lz4);
    let bo_identity: Identity = bo.conn.identity().expect("known once applied");
    let named = Arc::new(Mutex::new(None));
    let n = Arc::clone(&named);
    bo.conn.reducers().set_name_then("Bo".into(), move |_, r| *n.lock().unwrap() = Some(r)).unwrap();
    until(&bo.conn, "set_name's result", || named.lock().unwrap().is_some());
    assert_eq!(named.lock().unwrap().take(), Some(Ok(())));
    assert_eq!(say(&bo, "hello Ada"), Ok(()));
    assert_eq!(say(&bo, "   "), Err("messages must not be empty".into()));

    until(&ada.conn, "Bo's message", || ada.messages.lock().unwrap().contains(&"hello Ada".to_string()));
    let bo_seen = ada.conn.db().user().identity().find(&bo_identity).expect("Bo is in Ada's cache");
    assert_eq!((bo_seen.name.as_deref(), bo_seen.online), (Some("Bo"), true));
    assert_eq!(ada.conn.db().message().count(), 1);
    assert_eq!(ada.conn.db().user().count(), 2);

    // The CLI, as the owner.
    let rows =
        ok(tickdb(&config, addr).args(["sql", "chat", "SELECT name, online FROM user WHERE name = 'Bo'"]));
    assert!(rows.contains(" Bo ") && rows.contains("true") && rows.contains("(1 row)"), "{rows}");
    let refused = fails(tickdb(&config, addr).args(["call", "chat", "send_message", "5"]));
    assert!(refused.contains("argument 1 (`text`: String)"), "{refused}");
    let module_error = fails(tickdb(&config, addr).args(["call", "chat", "set_name", "\"Owner\""]));
    assert!(module_error.contains("cannot set the name of an unknown user"), "{module_error}");
    let unknown = fails(tickdb(&config, addr).args(["call", "chat", "fly"]));
    assert!(unknown.contains("no reducer `fly`") && unknown.contains("set_name(name: String)"), "{unknown}");
    let logs = ok(tickdb(&config, addr).args(["logs", "chat", "-n", "10"]));
    assert!(logs.contains("[set_name]") && logs.contains("is now called Bo"), "{logs}");

    // `subscribe` prints the rows, then an update, as JSON lines.
    let mut sub = Running::spawn(tickdb(&config, addr).args([
        "subscribe",
        "chat",
        "SELECT * FROM message",
        "-n",
        "1",
        "-t",
        "30",
    ]));
    let first: serde_json::Value = serde_json::from_str(&sub.until("SubscribeApplied")).unwrap();
    assert!(first["SubscribeApplied"].to_string().contains("hello Ada"), "{first}");
    assert_eq!(say(&bo, "second"), Ok(()));
    let second: serde_json::Value = serde_json::from_str(&sub.until("TickUpdate")).unwrap();
    assert!(second["TickUpdate"].to_string().contains("second"), "{second}");
    assert!(sub.child.wait().unwrap().success());

    // Ada's connection drops; Bo chats on; Ada reconnects and resumes.
    until(&ada.conn, "Bo's second message", || ada.messages.lock().unwrap().contains(&"second".to_string()));
    proxy.cut();
    until(&ada.conn, "Ada's disconnect", || *ada.disconnects.lock().unwrap() == 1);
    assert_eq!(say(&bo, "while you were away"), Ok(()));
    until(&ada.conn, "the message sent while Ada was away", || {
        ada.messages.lock().unwrap().contains(&"while you were away".to_string())
    });
    assert_eq!(*ada.applied.lock().unwrap(), [false, true], "the second apply resumed");
    assert_eq!(ada.conn.db().message().count(), 3);

    // The server restarts: both reconnect, get every row afresh, and see no row twice.
    server.stop();
    server = start_server(&dir.join("data"), addr);
    until(&ada.conn, "Ada's reconnect", || ada.applied.lock().unwrap().len() == 3);
    until(&bo.conn, "Bo's reconnect", || bo.applied.lock().unwrap().len() == 2);
    assert!(!ada.applied.lock().unwrap()[2], "a restarted server cannot resume");
    assert_eq!(say(&bo, "after the restart"), Ok(()));
    until(&ada.conn, "a message after the restart", || {
        ada.messages.lock().unwrap().contains(&"after the restart".to_string())
    });
    let seen = ada.messages.lock().unwrap().clone();
    assert_eq!(seen, ["hello Ada", "second", "while you were away", "after the restart"]);
    assert_eq!(ada.conn.db().message().count(), 4);
    ada.conn.disconnect();
    bo.conn.disconnect();
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Another identity can read public tables but not private ones, and cannot read the
/// logs of or delete a database it does not own; the owner can.
#[test]
fn a_second_identity_cannot_read_private_tables_or_delete() {
    let dir = temp_dir("access");
    let (owner, stranger) = (dir.join("owner.json"), dir.join("stranger.json"));
    let server = start_server(&dir.join("data"), "127.0.0.1:0".parse().unwrap());
    let addr = server.addr();
    let wasm = tickdb_test_modules::wasm_path("tickdb-test-features");
    ok(tickdb(&owner, addr).args(["publish", "feat", "--wasm"]).arg(&wasm));
    ok(tickdb(&stranger, addr).args(["identity", "new"]));
    let (me, them) = (
        ok(tickdb(&owner, addr).args(["identity", "show"])),
        ok(tickdb(&stranger, addr).args(["identity", "show"])),
    );
    assert_ne!(me, them, "two configs, two identities");

    let private = fails(tickdb(&stranger, addr).args(["sql", "feat", "SELECT * FROM config"]));
    assert!(private.contains("private") && private.contains("(403)"), "{private}");
    ok(tickdb(&owner, addr).args(["sql", "feat", "SELECT * FROM config"]));
    ok(tickdb(&stranger, addr).args(["sql", "feat", "SELECT * FROM hero"]));
    let logs = fails(tickdb(&stranger, addr).args(["logs", "feat"]));
    assert!(logs.contains("(403)"), "{logs}");
    let delete = fails(tickdb(&stranger, addr).args(["delete", "feat"]));
    assert!(delete.contains("(403)"), "{delete}");
    assert!(ok(tickdb(&stranger, addr).args(["list"])).contains("feat"));

    // Nor through a subscription.
    let conn = DbConnection::builder(Vec::new())
        .with_uri(format!("http://{addr}"))
        .with_database_name("feat")
        .build()
        .unwrap();
    let error = Arc::new(Mutex::new(None));
    let e = Arc::clone(&error);
    conn.subscription_builder()
        .on_error(move |_, message| *e.lock().unwrap() = Some(message.to_string()))
        .subscribe(["SELECT * FROM config"]);
    until(&conn, "the subscription's error", || error.lock().unwrap().is_some());
    assert!(error.lock().unwrap().as_deref().unwrap().contains("private"));

    ok(tickdb(&owner, addr).args(["delete", "feat"]));
    assert!(!ok(tickdb(&owner, addr).args(["list"])).contains("feat"));
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A set unsubscribed before its rows arrive leaves nothing in the cache, and
/// unsubscribing an applied set takes its rows out (with `on_delete`).
#[test]
fn unsubscribed_sets_leave_nothing_in_the_cache() {
    let dir = temp_dir("unsubscribe");
    let config = dir.join("owner.json");
    let server = start_server(&dir.join("data"), "127.0.0.1:0".parse().unwrap());
    let addr = server.addr();
    ok(tickdb(&config, addr).args(["publish", "chat", "--wasm"]).arg(chat_wasm()));
    let bo = connect(addr);
    assert_eq!(say(&bo, "one"), Ok(()));

    let conn = DbConnection::builder(bindings::tables())
        .with_uri(format!("http://{addr}"))
        .with_database_name("chat")
        .build()
        .unwrap();
    let inserted = Arc::new(Mutex::new(0));
    let i = Arc::clone(&inserted);
    conn.db().message().on_insert(move |_, _| *i.lock().unwrap() += 1);
    let deleted = Arc::new(Mutex::new(0));
    let d = Arc::clone(&deleted);
    conn.db().user().on_delete(move |_, _| *d.lock().unwrap() += 1);
    let early = conn.subscription_builder().subscribe(["SELECT * FROM message"]);
    early.unsubscribe();
    let applied = Arc::new(Mutex::new(false));
    let a = Arc::clone(&applied);
    let users = conn
        .subscription_builder()
        .on_applied(move |_| *a.lock().unwrap() = true)
        .subscribe(["SELECT * FROM user"]);
    until(&conn, "the later set", || *applied.lock().unwrap());
    assert_eq!(conn.db().message().count(), 0, "the early set's rows were not kept");
    assert_eq!(*inserted.lock().unwrap(), 0);
    assert_eq!(conn.db().user().count(), 2);
    users.unsubscribe();
    until(&conn, "the users leaving the cache", || conn.db().user().count() == 0);
    assert_eq!(*deleted.lock().unwrap(), 2);
    conn.disconnect();
    bo.conn.disconnect();
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Callbacks registered while others run (here: from `on_connect`) get ids of their
/// own: removing one callback leaves the others.
#[test]
fn callbacks_registered_from_callbacks_keep_their_own_ids() {
    let dir = temp_dir("callbacks");
    let config = dir.join("owner.json");
    let server = start_server(&dir.join("data"), "127.0.0.1:0".parse().unwrap());
    let addr = server.addr();
    ok(tickdb(&config, addr).args(["publish", "chat", "--wasm"]).arg(chat_wasm()));
    let (kept, removed) = (Arc::new(Mutex::new(0)), Arc::new(Mutex::new(0)));
    let k = Arc::clone(&kept);
    let conn = DbConnection::builder(bindings::tables())
        .with_uri(format!("http://{addr}"))
        .with_database_name("chat")
        .on_connect(move |ctx, _, _| {
            let k = Arc::clone(&k);
            ctx.db().message().on_insert(move |_, _| *k.lock().unwrap() += 1);
        })
        .build()
        .unwrap();
    let r = Arc::clone(&removed);
    let id = conn.db().message().on_insert(move |_, _| *r.lock().unwrap() += 1);
    until(&conn, "the connection", || conn.identity().is_some());
    assert!(conn.db().message().remove_callback(id));
    let applied = Arc::new(Mutex::new(false));
    let a = Arc::clone(&applied);
    conn.subscription_builder()
        .on_applied(move |_| *a.lock().unwrap() = true)
        .subscribe(["SELECT * FROM message"]);
    until(&conn, "the subscription", || *applied.lock().unwrap());
    let bo = connect(addr);
    assert_eq!(say(&bo, "hello"), Ok(()));
    until(&conn, "the message", || *kept.lock().unwrap() == 1);
    assert_eq!(*removed.lock().unwrap(), 0);
    conn.disconnect();
    bo.conn.disconnect();
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Generated bindings carry every kind of type both ways: enums with unit, tuple
/// and struct variants, nested structs, vectors and options as arguments, return
/// values and columns, unique lookups, and updates of a struct column.
#[test]
fn generated_bindings_carry_every_kind_of_type() {
    use features::{HeroClass, HeroClassMage, HeroPos, RemoteReducers as _, Tables as _};

    let dir = temp_dir("features");
    let config = dir.join("owner.json");
    let server = start_server(&dir.join("data"), "127.0.0.1:0".parse().unwrap());
    let addr = server.addr();
    let wasm = tickdb_test_modules::wasm_path("tickdb-test-features");
    ok(tickdb(&config, addr).args(["publish", "feat", "--wasm"]).arg(&wasm));
    let conn = DbConnection::builder(features::tables())
        .with_uri(format!("http://{addr}"))
        .with_database_name("feat")
        .on_error(|_, e| panic!("the client could not apply a message: {e}"))
        .build()
        .unwrap();
    let updates = Arc::new(Mutex::new(Vec::new()));
    let u = Arc::clone(&updates);
    conn.db().hero().on_update(move |_, old, new| u.lock().unwrap().push((old.pos.clone(), new.pos.clone())));
    conn.subscription_builder().subscribe(["SELECT * FROM hero"]);

    let mage = HeroClass::Mage(HeroClassMage { mana: 7 });
    let created = Arc::new(Mutex::new(None));
    let c = Arc::clone(&created);
    conn.reducers()
        .create_hero_then("Ada".into(), 3, 1, mage.clone(), move |_, r| *c.lock().unwrap() = Some(r))
        .unwrap();
    conn.reducers().create_hero("Bo".into(), 9, 1, HeroClass::Rogue(2)).unwrap();
    conn.reducers().create_hero("Cy".into(), 5, 2, HeroClass::Warrior).unwrap();
    until(&conn, "three heroes", || conn.db().hero().count() == 3);
    let created = created.lock().unwrap().take().expect("create_hero's result").expect("created");
    assert_eq!((created.name.as_str(), created.level), ("Ada", 3), "the reducer returns the row");
    let ada = conn.db().hero().name().find(&"Ada".to_string()).expect("Ada by her unique name");
    assert_eq!((ada.level, ada.zone, &ada.class, &ada.pos), (3, 1, &mage, &HeroPos { x: 0.0, y: 0.0 }));
    let bo = conn.db().hero().id().find(&(ada.id + 1)).expect("Bo by id");
    assert_eq!(bo.class, HeroClass::Rogue(2));

    let names = Arc::new(Mutex::new(None));
    let n = Arc::clone(&names);
    conn.reducers().in_zone_then(1, None, move |_, r| *n.lock().unwrap() = Some(r)).unwrap();
    until(&conn, "in_zone's result", || names.lock().unwrap().is_some());
    let mut found = names.lock().unwrap().take().unwrap().unwrap();
    found.sort();
    assert_eq!(found, ["Ada", "Bo"]);

    // One-off queries: rows decoded as the table's struct, and errors.
    let rows = Arc::new(Mutex::new(Vec::new()));
    let r = Arc::clone(&rows);
    conn.query("SELECT * FROM hero WHERE level > 4", move |_, result| r.lock().unwrap().push(result))
        .unwrap();
    let failed = Arc::new(Mutex::new(None));
    let f = Arc::clone(&failed);
    conn.query("SELECT * FROM nowhere", move |_, result| *f.lock().unwrap() = Some(result.map(|_| ())))
        .unwrap();
    until(&conn, "both queries' results", || {
        !rows.lock().unwrap().is_empty() && failed.lock().unwrap().is_some()
    });
    let error = failed.lock().unwrap().take().unwrap().expect_err("no such table");
    assert!(error.contains("nowhere"), "{error}");
    let result = rows.lock().unwrap().pop().unwrap().expect("the query runs");
    let mut heroes: Vec<features::Hero> = tickdb_sdk::decode_rows(&result).expect("rows decode as heroes");
    heroes.sort_by_key(|h| h.level);
    let found: Vec<_> = heroes.iter().map(|h| (h.name.as_str(), h.level)).collect();
    assert_eq!(found, [("Cy", 5), ("Bo", 9)]);

    conn.reducers().move_hero(ada.id, HeroPos { x: 1.5, y: -2.0 }).unwrap();
    until(&conn, "Ada's move", || !updates.lock().unwrap().is_empty());
    assert_eq!(updates.lock().unwrap()[0], (HeroPos { x: 0.0, y: 0.0 }, HeroPos { x: 1.5, y: -2.0 }));
    assert_eq!(conn.db().hero().name().find(&"Ada".to_string()).unwrap().pos, HeroPos { x: 1.5, y: -2.0 });
    // An update of a unique column moves its lookup.
    conn.reducers().rename(ada.id, "Ada the Bold".into()).unwrap();
    until(&conn, "the rename", || conn.db().hero().name().find(&"Ada the Bold".to_string()).is_some());
    assert!(conn.db().hero().name().find(&"Ada".to_string()).is_none());
    conn.disconnect();
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// `tickdb start` serves until SIGTERM, then stops cleanly; started again on the
/// same data directory, it brings the databases back.
#[test]
fn start_serves_stops_on_sigterm_and_restores() {
    let dir = temp_dir("start");
    let config = dir.join("owner.json");
    let free = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let start = || {
        let mut command = tickdb(&config, free);
        command.args(["start", "--listen", &free.to_string(), "--data-dir"]).arg(dir.join("data"));
        Running::spawn(&mut command)
    };
    let mut server = start();
    assert!(server.until("listening").contains(&format!("tickdb listening on http://{free}")));
    ok(tickdb(&config, free).args(["publish", "chat", "--wasm"]).arg(chat_wasm()));
    // Connecting makes a user row (the chat's client_connected).
    ok(tickdb(&config, free).args(["subscribe", "chat", "SELECT * FROM user", "-n", "0"]));
    let stopped = Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    assert!(stopped.success());
    assert!(server.child.wait().unwrap().success(), "a clean exit on SIGTERM");

    let server = start();
    server.until("listening");
    let list = ok(tickdb(&config, free).args(["list"]));
    assert!(list.contains("chat") && list.contains("(you)"), "{list}");
    let users = ok(tickdb(&config, free).args(["sql", "chat", "SELECT online FROM user"]));
    assert!(users.contains("(1 row)"), "the row came back: {users}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The checked-in bindings (the chat and MMO clients', and the features module's these
/// tests use) are what `tickdb generate` makes of their modules now.
#[test]
fn the_checked_in_bindings_are_up_to_date() {
    let dir = temp_dir("generate");
    let config = dir.join("config.json");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cases = [
        ("tickdb-example-chat", "examples/chat", "examples/chat/client/src/bindings"),
        ("tickdb-test-features", "test-modules/features", "cli/tests/bindings/features"),
        ("tickdb-example-mmo", "examples/mmo", "examples/mmo/client/src/bindings"),
    ];
    for (package, project, checked_in) in cases {
        let out = dir.join(package);
        let wasm = tickdb_test_modules::wasm_path(package);
        let mut generate = tickdb(&config, "127.0.0.1:9".parse().unwrap());
        ok(generate.args(["generate", "--lang", "rust", "--wasm"]).arg(wasm).arg("--out-dir").arg(&out));
        let generated = std::fs::read_to_string(out.join("mod.rs")).unwrap();
        let checked_in_text = std::fs::read_to_string(root.join(checked_in).join("mod.rs")).unwrap();
        assert!(
            generated == checked_in_text,
            "{checked_in} is out of date; run:\n  cargo run -p tickdb-cli -- generate -p {project} -o {checked_in}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A child process killed when the test ends, passed or not, and its stdout lines
/// read on a thread of their own, so that waiting for one has a deadline.
struct Running {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Running {
    fn spawn(command: &mut Command) -> Running {
        let mut child = command.stdout(Stdio::piped()).spawn().expect("it starts");
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Running { child, lines }
    }

    /// The lines up to one that contains `needle`; panics after the deadline (builds
    /// included: five minutes).
    fn until(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut seen = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    seen.push_str(&line);
                    seen.push('\n');
                    if line.contains(needle) {
                        return seen;
                    }
                }
                Err(_) => panic!("no line with `{needle}` before the deadline or the end; saw:\n{seen}"),
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `init` makes a project that `dev` builds and publishes into a server it starts,
/// and publishes again when a source file changes.
#[test]
fn init_then_dev_publishes_and_republishes_on_change() {
    let dir = temp_dir("dev");
    let project = dir.join("hello");
    let config = dir.join("config.json");
    let free = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    ok(tickdb(&config, free).arg("init").arg(&project));
    // Share the compiled SDK with the test modules' build.
    let target = chat_wasm().ancestors().nth(3).unwrap().to_path_buf();
    let dev = Running::spawn(
        tickdb(&config, free)
            .arg("dev")
            .arg("-p")
            .arg(&project)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env("CARGO_TARGET_DIR", &target),
    );
    let started = dev.until("watching");
    assert!(started.contains("started a tickdb server") && started.contains("created `hello`"), "{started}");
    ok(tickdb(&config, free).args(["call", "hello", "add", "\"Ada\""]));

    let lib = project.join("src/lib.rs");
    let mut source = std::fs::read_to_string(&lib).unwrap();
    source.push_str("\n#[reducer]\npub fn clear_all(ctx: &ReducerContext) {\n    for p in ctx.db.person().iter() {\n        ctx.db.person().delete(p);\n    }\n}\n");
    std::fs::File::create(&lib).unwrap().write_all(source.as_bytes()).unwrap();
    let again = dev.until("watching");
    assert!(again.contains("migrated `hello`"), "{again}");
    assert!(ok(tickdb(&config, free).args(["describe", "hello"])).contains("clear_all()"));
    let rows = ok(tickdb(&config, free).args(["sql", "hello", "SELECT name FROM person"]));
    assert!(rows.contains("Ada"), "the data stayed through the republish: {rows}");
    drop(dev);
    let _ = std::fs::remove_dir_all(&dir);
}

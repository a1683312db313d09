//! Who may do what, over the HTTP API and WebSocket: the identity that publishes a
//! database owns it; republishing, deleting, SQL writes, private tables and logs are
//! its alone, and everyone else gets a 403 that says why; visibility rules decide
//! which rows each client sees; `client_connected` can refuse a client.

mod common;

use common::*;
use serde_json::json;
use tickdb_net::ServerConfig;
use tickdb_protocol::ServerMessage;

fn sql(server: &TestServer, token: &str, query: &str) -> Reply {
    http(server.addr, "POST", "/v1/database/game/sql", Some(token), query.as_bytes())
}

/// The owner may do everything; another identity is refused each owner-only thing
/// with a 403 naming it, and nothing changes.
#[test]
fn owner_only_operations_are_refused_to_others() {
    let server = start("access-owner", ServerConfig::default());
    let (owner, other) = (new_token(server.addr), new_token(server.addr));
    assert_eq!(
        http(server.addr, "POST", "/v1/database/game", None, b"\0asm").status,
        401,
        "publishing needs a token"
    );
    let created = publish(server.addr, "game", &owner, "tickdb-test-features");
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(publish(server.addr, "game", &owner, "tickdb-test-features").json()["outcome"], "unchanged");

    let refused = publish(server.addr, "game", &other, "tickdb-example-chat");
    assert_eq!(refused.status, 403, "{}", refused.text());
    let refused = http(server.addr, "DELETE", "/v1/database/game", Some(&other), b"");
    assert_eq!(refused.status, 403, "{}", refused.text());
    let refused = http(server.addr, "GET", "/v1/database/game/logs", Some(&other), b"");
    assert_eq!(refused.status, 403, "{}", refused.text());
    let refused = sql(&server, &other, "SELECT * FROM config");
    assert_eq!(refused.status, 403, "private table: {}", refused.text());
    let refused = sql(&server, &other, "DELETE FROM event");
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert!(refused.json()["error"].as_str().unwrap().contains("only the owner"));

    // The owner reads the private table `init` wrote, and changes it with SQL.
    let rows = sql(&server, &owner, "SELECT key, value FROM config").json();
    assert_eq!(rows["rows"], json!([["initialized", 1]]));
    let changed = sql(&server, &owner, "UPDATE config SET value = 2 WHERE key = 'initialized'");
    assert_eq!(changed.json()["rows_affected"], 1, "{}", changed.text());
    let logs = http(server.addr, "GET", "/v1/database/game/logs?n=10", Some(&owner), b"").json();
    assert!(logs["lines"].as_array().unwrap().iter().any(|l| l["message"] == "initialized"), "{logs}");

    // Republishing another module needs `clear`; then the data starts afresh.
    let conflict = publish(server.addr, "game", &owner, "tickdb-example-chat");
    assert_eq!(conflict.status, 409, "{}", conflict.text());
    let wasm = tickdb_test_modules::wasm("tickdb-example-chat");
    let replaced = http(server.addr, "POST", "/v1/database/game?clear=true", Some(&owner), &wasm);
    assert_eq!(replaced.json()["outcome"], "replaced", "{}", replaced.text());
    let schema = http(server.addr, "GET", "/v1/database/game/schema", None, b"").json();
    let tables: Vec<&str> =
        schema["tables"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(tables, ["message", "user"]);

    let deleted = http(server.addr, "DELETE", "/v1/database/game", Some(&owner), b"");
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    assert_eq!(http(server.addr, "GET", "/v1/database", None, b"").json()["databases"], json!([]));
    assert_eq!(sql(&server, &owner, "SELECT * FROM user").status, 404);
}

/// Reducers called over HTTP with JSON arguments run as the token's identity; each
/// identity then reads only its own heroes (the module's visibility rule), over HTTP
/// and through subscriptions; a subscription to a private table is refused.
#[test]
fn visibility_rules_apply_to_every_reader() {
    let server = start("access-rows", ServerConfig::default());
    let (owner, ada, bo) = (new_token(server.addr), new_token(server.addr), new_token(server.addr));
    assert_eq!(publish(server.addr, "game", &owner, "tickdb-test-features").status, 201);
    let call = |token: &str, args: serde_json::Value| {
        http(
            server.addr,
            "POST",
            "/v1/database/game/call/create_hero",
            Some(token),
            args.to_string().as_bytes(),
        )
    };
    let made = call(&ada, json!(["Ada", 3, 1, {"Warrior": []}]));
    assert_eq!(made.status, 200, "{}", made.text());
    assert_eq!(made.json()["ok"][1], "Ada", "the returned hero");
    assert_eq!(call(&bo, json!({"name": "Bo", "level": 5, "zone": 1, "class": {"Rogue": 2}})).status, 200);
    let bad = call(&bo, json!(["Cy", "high", 1, {"Warrior": []}]));
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"], "reducer `create_hero`: level: expected u32, found a string");
    let taken = call(&bo, json!(["Ada", 1, 1, {"Warrior": []}]));
    assert_eq!(taken.status, 400, "the module's own error: {}", taken.text());
    let internal = http(server.addr, "POST", "/v1/database/game/call/connected", Some(&bo), b"[]");
    assert_eq!(internal.status, 403, "lifecycle reducers are the server's: {}", internal.text());

    let names =
        |token: &str| sql(&server, token, "SELECT name FROM hero ORDER BY name").json()["rows"].clone();
    assert_eq!(names(&ada), json!([["Ada"]]));
    assert_eq!(names(&bo), json!([["Bo"]]));
    assert_eq!(names(&owner), json!([["Ada"], ["Bo"]]), "the owner sees every row");

    let mut client = connect(server.addr, "game", &format!("?token={ada}"));
    client.recv();
    client.subscribe(1, &["SELECT * FROM hero"]);
    match client.recv() {
        ServerMessage::SubscribeApplied { tables, .. } => {
            assert_eq!(tables[0].rows.len(), 1, "Ada's hero only")
        }
        other => panic!("expected SubscribeApplied, got {other:?}"),
    }
    client.subscribe(2, &["SELECT * FROM config"]);
    match client.recv() {
        ServerMessage::SubscriptionError { query_set_id: 2, message } => {
            assert!(message.contains("config"), "{message}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Bo's new hero does not reach Ada; her own does.
    assert_eq!(call(&bo, json!(["Bo2", 1, 1, {"Warrior": []}])).status, 200);
    assert_eq!(call(&ada, json!(["Ada2", 1, 1, {"Warrior": []}])).status, 200);
    match client.recv() {
        ServerMessage::TickUpdate { query_sets, .. } => {
            assert_eq!(query_sets[0].tables[0].inserts.len(), 1);
            let row = query_sets[0].tables[0].inserts.row(0);
            assert!(row.windows(4).any(|w| w == b"Ada2"), "Ada's second hero");
        }
        other => panic!("expected TickUpdate, got {other:?}"),
    }
}

/// An `Err` from `client_connected` refuses the WebSocket with its message; others
/// keep connecting once it stops refusing.
#[test]
fn client_connected_can_refuse() {
    let server = start("access-refuse", ServerConfig::default());
    let owner = new_token(server.addr);
    assert_eq!(publish(server.addr, "game", &owner, "tickdb-test-features").status, 201);
    let ban = http(server.addr, "POST", "/v1/database/game/call/set_config", None, br#"["banned", 1]"#);
    assert_eq!(ban.status, 200, "{}", ban.text());
    let (status, body) = try_connect(server.addr, "game", "").err().expect("refused");
    assert_eq!(status, 403);
    assert!(body.contains("the server is closed"), "{body}");
    http(server.addr, "POST", "/v1/database/game/call/set_config", None, br#"["banned", 0]"#);
    let mut client = connect(server.addr, "game", "");
    assert!(matches!(client.recv(), ServerMessage::IdentityToken { .. }));
}

/// The owner follows the module's log: asking for the lines after the last one it has
/// waits for the next line and returns it.
#[test]
fn the_owner_follows_the_log() {
    let server = start("access-logs", ServerConfig::default());
    let owner = new_token(server.addr);
    assert_eq!(publish(server.addr, "chat", &owner, "tickdb-example-chat").status, 201);
    let logs =
        |query: &str| http(server.addr, "GET", &format!("/v1/database/chat/logs{query}"), Some(&owner), b"");
    let next = logs("").json()["next"].as_u64().unwrap();
    let addr = server.addr;
    let token = owner.clone();
    let follower = std::thread::spawn(move || {
        let path = format!("/v1/database/chat/logs?after={next}&wait=20");
        http(addr, "GET", &path, Some(&token), b"").json()
    });
    // A user names itself; the chat module logs it.
    let mut client = connect(server.addr, "chat", "");
    client.recv();
    client.call(1, "set_name", tickdb::Type::to_bytes(&"Lou".to_string()));
    client.recv();
    let followed = follower.join().unwrap();
    assert_eq!(followed["lines"][0]["seq"], next);
    assert!(followed["lines"][0]["message"].as_str().unwrap().ends_with("is now called Lou"), "{followed}");
    assert_eq!(followed["next"], next + 1);
    let none = logs(&format!("?after={}", next + 1)).json();
    assert_eq!(none["lines"], json!([]), "nothing newer, and no wait asked");
}

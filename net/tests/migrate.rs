//! End-to-end: publishing a new module into a running database migrates its tables in
//! place. Connected clients stay connected and get their subscriptions' rows again
//! with the new columns; the new reducers work; a change that would lose rows is
//! refused with the reasons; a restart brings the migrated database back.

mod common;

use common::*;
use tickdb::Type;
use tickdb_net::ServerConfig;
use tickdb_protocol::ServerMessage;
use tickdb_wasm_abi::{ProductType, Value, ValueType, decode_exact};

fn row_type(server: &TestServer, db: &str, table: &str) -> ValueType {
    let served = server.server.as_ref().unwrap().databases().get(db).unwrap();
    let schema = served.module().def.table(table).unwrap().clone();
    ValueType::Product(ProductType::new(schema.columns.iter().map(|c| (c.name.clone(), c.ty.clone()))))
}

fn values(ty: &ValueType, row: &[u8]) -> Vec<Value> {
    match decode_exact(ty, row).unwrap() {
        Value::Product(values) => values,
        other => panic!("{other:?}"),
    }
}

fn call_ok(client: &mut Client, request_id: u32, reducer: &str, args: Vec<u8>) -> Vec<u8> {
    client.call(request_id, reducer, args);
    loop {
        match client.recv() {
            ServerMessage::ReducerResult { request_id: id, outcome, .. } if id == request_id => {
                return outcome.unwrap_or_else(|e| panic!("{reducer}: {e}"));
            }
            ServerMessage::TickUpdate { .. } => {}
            other => panic!("expected ReducerResult, got {other:?}"),
        }
    }
}

/// The player rows a SubscribeApplied for set 1 carries.
fn applied_rows(message: ServerMessage) -> Vec<Vec<u8>> {
    match message {
        ServerMessage::SubscribeApplied { query_set_id: 1, mut tables, resumed: false, .. } => {
            assert_eq!(tables.len(), 1);
            tables.remove(0).rows.iter().map(<[u8]>::to_vec).collect()
        }
        other => panic!("expected SubscribeApplied, got {other:?}"),
    }
}

#[test]
fn a_compatible_module_migrates_in_place_with_clients_connected() {
    let mut server = start("migrate", ServerConfig::default());
    let owner = new_token(server.addr);
    let published = publish(server.addr, "game", &owner, "tickdb-test-evolve");
    assert_eq!(published.status, 201, "{}", published.text());

    let mut ada = connect(server.addr, "game", "");
    assert!(matches!(ada.recv(), ServerMessage::IdentityToken { .. }));
    call_ok(&mut ada, 1, "join", "ada".to_string().to_bytes());
    let mut note = 7u64.to_bytes();
    "private for now".to_string().encode(&mut note);
    call_ok(&mut ada, 2, "write_note", note);
    ada.subscribe(1, &["SELECT * FROM player"]);
    let rows = applied_rows(ada.recv());
    assert_eq!(values(&row_type(&server, "game", "player"), &rows[0]), [Value::U64(1), Value::string("ada")]);

    // Not everyone may read `note` yet.
    let mut bo = connect(server.addr, "game", "");
    assert!(matches!(bo.recv(), ServerMessage::IdentityToken { .. }));
    bo.subscribe(3, &["SELECT * FROM note"]);
    assert!(matches!(bo.recv(), ServerMessage::SubscriptionError { query_set_id: 3, .. }));

    // Cy holds the players at the last tick before the migration, then leaves.
    let mut cy = connect(server.addr, "game", "");
    let epoch = match cy.recv() {
        ServerMessage::IdentityToken { epoch, .. } => epoch,
        other => panic!("{other:?}"),
    };
    cy.subscribe(2, &["SELECT * FROM player"]);
    assert!(matches!(cy.recv(), ServerMessage::SubscribeApplied { .. }));
    drop(cy);

    // A module that would drop the tables is refused, naming them, and changes nothing.
    let refused = publish(server.addr, "game", &owner, "tickdb-example-chat");
    assert_eq!(refused.status, 409, "{}", refused.text());
    let why = refused.json()["error"].as_str().unwrap().to_string();
    assert!(why.contains("table `player` is removed") && why.contains("table `note` is removed"), "{why}");
    assert!(why.contains("clear=true"), "{why}");
    // Only the owner may publish.
    let stranger = new_token(server.addr);
    assert_eq!(publish(server.addr, "game", &stranger, "tickdb-test-evolve-v2").status, 403);

    // The last tick before the migration: a query runs on the tick thread after the
    // work queued before it (Cy's leaving), so the tick read after it is the last.
    let sql =
        |query: &str| http(server.addr, "POST", "/v1/database/game/sql", Some(&owner), query.as_bytes());
    assert_eq!(sql("SELECT * FROM note").status, 200);
    let served = server.server.as_ref().unwrap().databases().get("game").unwrap();
    let before = served.status.tick.load(std::sync::atomic::Ordering::Acquire);
    drop(served);
    let migrated = publish(server.addr, "game", &owner, "tickdb-test-evolve-v2");
    assert_eq!(migrated.status, 200, "{}", migrated.text());
    let body = migrated.json();
    assert_eq!(body["outcome"], "migrated");
    let changes: Vec<&str> =
        body["changes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    for expected in [
        "column `player.level` is added",
        "column `player.title` is added",
        "index `player_name_idx` on player(name) is added",
        "table `note` becomes public",
        "table `guild` is added",
    ] {
        assert!(changes.contains(&expected), "{expected} is not in {changes:?}");
    }

    // Ada, still connected, gets her set's rows again, with the new columns' defaults.
    let player = row_type(&server, "game", "player");
    let rows = applied_rows(ada.recv());
    let newcomer = Value::Option(Some(Box::new(Value::string("newcomer"))));
    assert_eq!(
        values(&player, &rows[0]),
        [Value::U64(1), Value::string("ada"), Value::U32(1), newcomer.clone()]
    );
    // Cy comes back resuming from before the migration: the rows it holds are of the
    // old tables, so it gets every row again, with the new columns.
    let mut cy = connect(server.addr, "game", "");
    assert!(matches!(cy.recv(), ServerMessage::IdentityToken { epoch: e, .. } if e == epoch));
    cy.send(&tickdb_protocol::ClientMessage::Subscribe {
        query_set_id: 2,
        queries: vec!["SELECT * FROM player".into()],
        resume_after_tick: before,
        resume_epoch: epoch,
    });
    match cy.recv() {
        ServerMessage::SubscribeApplied { resumed, tables, tick, .. } => {
            assert!(!resumed && tick > before, "resumed {resumed} at {tick}, after {before}");
            assert_eq!(values(&player, tables[0].rows.row(0)).len(), 4);
        }
        other => panic!("{other:?}"),
    }
    // The new reducers work over the migrated rows, and the updates carry the new columns.
    let level = call_ok(&mut ada, 4, "level_up", 1u64.to_bytes());
    assert_eq!(decode_exact(&ValueType::U32, &level).unwrap(), Value::U32(2));
    call_ok(&mut ada, 5, "found_guild", "lions".to_string().to_bytes());
    call_ok(&mut ada, 6, "join", "cy".to_string().to_bytes());
    // `note` is public now: Bo may read what was stored before.
    bo.subscribe(3, &["SELECT * FROM note"]);
    match bo.recv() {
        ServerMessage::SubscribeApplied { query_set_id: 3, tables, .. } => {
            assert_eq!(tables[0].rows.len(), 1)
        }
        other => panic!("expected SubscribeApplied, got {other:?}"),
    }

    // A restart brings the migrated database back: tables, rows, sequences.
    let dir = std::mem::take(&mut server.dir);
    drop(server);
    let server = start_in(dir, ServerConfig::default());
    let sql = |query: &str| {
        let reply = http(server.addr, "POST", "/v1/database/game/sql", Some(&owner), query.as_bytes());
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.json()
    };
    let players = sql("SELECT * FROM player");
    let rows = players["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{players}");
    assert!(rows.contains(&serde_json::json!([1, "ada", 2, "newcomer"])), "{players}");
    assert!(rows.contains(&serde_json::json!([2, "cy", 1, null])), "{players}");
    let guilds = sql("SELECT * FROM guild");
    assert_eq!(guilds["rows"], serde_json::json!([[1, "lions"]]));
    let module_files = std::fs::read_dir(server.dir.join("databases/game"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("module-"))
        .count();
    assert_eq!(module_files, 1, "the old module's file is gone");
}

/// A migration that cannot be recorded (here: the snapshots directory is a file)
/// stops the database rather than let its log run ahead of its record: clients are
/// told why, and a restart brings it back as it was, with the old module.
#[test]
fn a_migration_that_cannot_be_recorded_stops_the_database_and_loses_nothing() {
    let mut server = start("migrate-fails", ServerConfig::default());
    let owner = new_token(server.addr);
    assert_eq!(publish(server.addr, "game", &owner, "tickdb-test-evolve").status, 201);
    let mut ada = connect(server.addr, "game", "");
    assert!(matches!(ada.recv(), ServerMessage::IdentityToken { .. }));
    call_ok(&mut ada, 1, "join", "ada".to_string().to_bytes());

    let snapshots = server.dir.join("databases/game/snapshots");
    let _ = std::fs::remove_dir_all(&snapshots);
    std::fs::write(&snapshots, b"in the way").unwrap();
    let failed = publish(server.addr, "game", &owner, "tickdb-test-evolve-v2");
    assert_eq!(failed.status, 500, "{}", failed.text());
    let why = failed.json()["error"].as_str().unwrap().to_string();
    assert!(why.contains("the migration failed part way and the database stopped"), "{why}");
    let (_, reason) = ada.closed();
    assert!(reason.contains("the migration failed part way"), "{reason}");
    assert_eq!(http(server.addr, "GET", "/v1/database/game/schema", None, b"").status, 404);

    std::fs::remove_file(&snapshots).unwrap();
    let dir = std::mem::take(&mut server.dir);
    drop(server);
    let server = start_in(dir, ServerConfig::default());
    let schema = http(server.addr, "GET", "/v1/database/game/schema", None, b"").json();
    let tables: Vec<&str> =
        schema["tables"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert!(!tables.contains(&"guild"), "the old module runs: {tables:?}");
    let players = http(server.addr, "POST", "/v1/database/game/sql", Some(&owner), b"SELECT * FROM player");
    assert_eq!(players.json()["rows"], serde_json::json!([[1, "ada"]]));
    let modules = std::fs::read_dir(server.dir.join("databases/game"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("module-"))
        .count();
    assert_eq!(modules, 1, "the new module's file was removed");
}

//! End-to-end: real WebSocket clients on 127.0.0.1 against a server publishing the
//! chat example: identities and tokens, reducer calls and results, subscriptions
//! whose initial rows and per-tick updates match the tables, one-off queries.

mod common;

use common::*;
use tickdb::Type;
use tickdb_net::ServerConfig;
use tickdb_protocol::{ClientMessage, ServerMessage, TableUpdate};
use tickdb_wasm_abi::{Identity, ProductType, Value, ValueType, decode_exact};

fn row_type(server: &TestServer, db: &str, table: &str) -> ValueType {
    let served = server.server.as_ref().unwrap().databases().get(db).unwrap();
    let schema = served.module().def.table(table).unwrap().clone();
    ValueType::Product(ProductType::new(schema.columns.iter().map(|c| (c.name.clone(), c.ty.clone()))))
}

fn identity_of(message: ServerMessage) -> (Identity, String) {
    match message {
        ServerMessage::IdentityToken { identity, token, .. } => (Identity(identity), token),
        other => panic!("expected IdentityToken, got {other:?}"),
    }
}

/// The text column of each message row.
fn texts(ty: &ValueType, rows: impl Iterator<Item = Vec<u8>>) -> Vec<String> {
    rows.map(|r| match decode_exact(ty, &r).unwrap() {
        Value::Product(v) => match &v[2] {
            Value::String(s) => s.to_string(),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    })
    .collect()
}

fn single_table(message: ServerMessage) -> (u64, TableUpdate) {
    match message {
        ServerMessage::TickUpdate { tick, mut query_sets, .. } => {
            assert_eq!(query_sets.len(), 1);
            let mut set = query_sets.remove(0);
            assert_eq!(set.tables.len(), 1);
            (tick, set.tables.remove(0))
        }
        other => panic!("expected TickUpdate, got {other:?}"),
    }
}

/// Two clients: each gets an identity; one subscribes to messages and users, the other
/// names itself and sends a message; the first sees exactly those changes (the name
/// as an update carrying the changed column only), and the caller gets its results.
#[test]
fn clients_call_reducers_and_see_each_others_changes() {
    let server = start("clients", ServerConfig::default());
    let owner = new_token(server.addr);
    let published = publish(server.addr, "chat", &owner, "tickdb-example-chat");
    assert_eq!(published.status, 201, "{}", published.text());

    let mut ada = connect(server.addr, "chat", "");
    let (ada_id, _) = identity_of(ada.recv());
    ada.subscribe(7, &["SELECT * FROM message", "SELECT * FROM user WHERE online = true"]);
    let (messages, users) = match ada.recv() {
        ServerMessage::SubscribeApplied { query_set_id: 7, tables, .. } => {
            (tables[0].clone(), tables[1].clone())
        }
        other => panic!("expected SubscribeApplied, got {other:?}"),
    };
    assert_eq!((messages.table_name.as_str(), messages.rows.len()), ("message", 0));
    assert_eq!((users.table_name.as_str(), users.rows.len()), ("user", 1), "Ada herself, online");

    let mut bo = connect(server.addr, "chat", "?compression=lz4");
    let (bo_id, _) = identity_of(bo.recv());
    assert_ne!(ada_id, bo_id, "each new client gets its own identity");
    let (_, joined) = single_table(ada.recv());
    assert_eq!((joined.table_name.as_str(), joined.inserts.len()), ("user", 1), "Bo came online");

    bo.call(1, "set_name", "Bo".to_string().to_bytes());
    match bo.recv() {
        ServerMessage::ReducerResult { request_id: 1, outcome: Ok(value), .. } => assert!(value.is_empty()),
        other => panic!("expected Bo's result, got {other:?}"),
    }
    let (_, renamed) = single_table(ada.recv());
    assert_eq!(renamed.updates.len(), 1, "a row with a primary key changes in place");
    assert_eq!(renamed.updates.keys.row(0), &bo_id.0[..], "named by its primary key");
    assert_eq!(renamed.updates.changed, vec![0b010], "only the name column changed");
    assert_eq!(renamed.updates.values.row(0), &Some("Bo".to_string()).to_bytes()[..]);

    bo.call(2, "send_message", "hello Ada".to_string().to_bytes());
    bo.call(3, "send_message", "   ".to_string().to_bytes());
    let mut results = [bo.recv(), bo.recv()];
    results.sort_by_key(|m| match m {
        ServerMessage::ReducerResult { request_id, .. } => *request_id,
        _ => 0,
    });
    assert!(matches!(&results[0], ServerMessage::ReducerResult { request_id: 2, outcome: Ok(_), .. }));
    match &results[1] {
        ServerMessage::ReducerResult { request_id: 3, outcome: Err(why), .. } => {
            assert_eq!(why, "messages must not be empty")
        }
        other => panic!("expected the refusal, got {other:?}"),
    }
    let ty = row_type(&server, "chat", "message");
    let (tick, sent) = single_table(ada.recv());
    assert_eq!(texts(&ty, sent.inserts.iter().map(<[u8]>::to_vec)), vec!["hello Ada"]);

    // One-off queries read the same state.
    ada.send(&ClientMessage::OneOffQuery { request_id: 9, sql: "SELECT text FROM message".into() });
    match ada.recv() {
        ServerMessage::QueryResult { request_id: 9, outcome: Ok(rows), .. } => {
            assert_eq!(rows.columns, vec!["text"]);
            let ty = tickdb_wasm_abi::decode_type(&rows.row_type).unwrap();
            let values: Vec<Value> = rows.rows.iter().map(|r| decode_exact(&ty, r).unwrap()).collect();
            assert_eq!(values, vec![Value::Product(vec![Value::String("hello Ada".into())])]);
        }
        other => panic!("expected QueryResult, got {other:?}"),
    }
    ada.send(&ClientMessage::OneOffQuery { request_id: 10, sql: "SELECT nope FROM message".into() });
    match ada.recv() {
        ServerMessage::QueryResult { request_id: 10, outcome: Err(why), .. } => {
            assert!(why.contains("nope"), "{why}")
        }
        other => panic!("expected a failed QueryResult, got {other:?}"),
    }

    // Bo leaves: Ada sees him go offline, which drops him from her `online = true` query.
    drop(bo);
    let (later, left) = single_table(ada.recv());
    assert!(later > tick);
    assert_eq!((left.table_name.as_str(), left.deletes.len()), ("user", 1));

    // Unknown reducers are refused without a call.
    ada.call(11, "no_such_reducer", vec![]);
    match ada.recv() {
        ServerMessage::ReducerResult { request_id: 11, outcome: Err(why), .. } => {
            assert!(why.contains("no reducer `no_such_reducer`"), "{why}")
        }
        other => panic!("expected the refusal, got {other:?}"),
    }
}

/// A client that comes back with its token keeps its identity; a token the server did
/// not sign is refused.
#[test]
fn tokens_keep_identities() {
    let server = start("tokens", ServerConfig::default());
    let owner = new_token(server.addr);
    assert_eq!(publish(server.addr, "chat", &owner, "tickdb-example-chat").status, 201);
    let mut first = connect(server.addr, "chat", "");
    let (identity, token) = identity_of(first.recv());
    drop(first);
    let mut again = connect(server.addr, "chat", &format!("?token={token}"));
    assert_eq!(identity_of(again.recv()).0, identity);
    let forged = format!("{}x", &token[..token.len() - 1]);
    let (status, body) = try_connect(server.addr, "chat", &format!("?token={forged}")).err().unwrap();
    assert_eq!(status, 401, "{body}");
}

/// A client's cache of one query's rows, by primary key (the first column, a `u64`),
/// kept up to date from updates alone.
#[derive(Default)]
struct Cache {
    rows: std::collections::BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Cache {
    fn apply(&mut self, columns: &[ValueType], update: &TableUpdate) {
        for row in update.deletes.iter() {
            assert!(self.rows.remove(&row[..8]).is_some(), "a delete of a row the client has");
        }
        for row in update.inserts.iter() {
            assert!(self.rows.insert(row[..8].to_vec(), row.to_vec()).is_none(), "an insert of a new row");
        }
        let width = columns.len().div_ceil(8);
        for i in 0..update.updates.len() {
            let key = update.updates.keys.row(i);
            let old = self.rows.get(key).expect("an update of a row the client has");
            let mut cols = split(columns, old);
            let changed = &update.updates.changed[i * width..(i + 1) * width];
            let mut values = tickdb_wasm_abi::Reader::new(update.updates.values.row(i));
            for (c, ty) in columns.iter().enumerate() {
                if changed[c / 8] & (1 << (c % 8)) != 0 {
                    let start = values.position();
                    tickdb_wasm_abi::skip(ty, &mut values).unwrap();
                    cols[c] = update.updates.values.row(i)[start..values.position()].to_vec();
                }
            }
            assert_eq!(values.remaining(), 0, "every changed value used");
            self.rows.insert(key.to_vec(), cols.concat());
        }
    }
}

fn split(columns: &[ValueType], row: &[u8]) -> Vec<Vec<u8>> {
    let mut r = tickdb_wasm_abi::Reader::new(row);
    columns
        .iter()
        .map(|ty| {
            let start = r.position();
            tickdb_wasm_abi::skip(ty, &mut r).unwrap();
            row[start..r.position()].to_vec()
        })
        .collect()
}

/// Random reducer calls (inserts, renames, moves, deletes, range deletes, several per
/// tick, some refused) are watched by a client holding two query sets: its caches,
/// kept from the updates alone (updates carrying changed columns only), end equal to
/// the queries' results.
#[test]
fn caches_kept_from_updates_equal_the_tables() {
    let server = start("clients-model", ServerConfig::default());
    let owner = new_token(server.addr);
    assert_eq!(publish(server.addr, "game", &owner, "tickdb-test-features").status, 201);
    let columns: Vec<ValueType> = match row_type(&server, "game", "hero") {
        ValueType::Product(p) => p.fields.into_iter().map(|f| f.ty).collect(),
        _ => unreachable!(),
    };
    let queries = ["SELECT * FROM hero", "SELECT * FROM hero WHERE level >= 5"];
    let mut watcher = connect(server.addr, "game", &format!("?token={owner}&compression=lz4"));
    watcher.recv();
    watcher.subscribe(1, &queries[..1]);
    watcher.subscribe(2, &queries[1..]);
    let mut caches = [Cache::default(), Cache::default()];
    for _ in 0..2 {
        match watcher.recv() {
            ServerMessage::SubscribeApplied { query_set_id, tables, .. } => {
                assert!(tables[0].rows.is_empty(), "{query_set_id}")
            }
            other => panic!("expected SubscribeApplied, got {other:?}"),
        }
    }

    let mut actor = connect(server.addr, "game", "");
    actor.recv();
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let calls = 300;
    let mut last_tick = 0;
    for i in 0..calls {
        let (reducer, args) = match next(6) {
            0 | 1 => {
                let args =
                    [format!("h{i}").to_bytes(), (1 + next(9) as u32).to_bytes(), 0u32.to_bytes(), vec![0]];
                ("create_hero", args.concat())
            }
            2 => ("rename", [(1 + next(i + 1)).to_bytes(), format!("r{}", next(50)).to_bytes()].concat()),
            3 => (
                "move_hero",
                [(1 + next(i + 1)).to_bytes(), 1.5f32.to_bytes(), (next(9) as f32).to_bytes()].concat(),
            ),
            4 => ("delete_hero", format!("h{}", next(i + 1)).to_bytes()),
            _ => ("cull", (next(3) as u32).to_bytes()),
        };
        actor.call(i as u32, reducer, args);
        // In batches of ten: several calls share a tick, and rows live across ticks.
        if i % 10 == 9 {
            for _ in 0..10 {
                match actor.recv() {
                    ServerMessage::ReducerResult { tick, .. } => last_tick = last_tick.max(tick),
                    other => panic!("expected a result, got {other:?}"),
                }
            }
        }
    }
    // One last insert, so that the watcher knows when it has seen everything.
    actor.call(
        9999,
        "create_hero",
        ["last".to_string().to_bytes(), 9u32.to_bytes(), 0u32.to_bytes(), vec![0]].concat(),
    );
    let final_tick = match actor.recv() {
        ServerMessage::ReducerResult { request_id: 9999, tick, outcome: Ok(_), .. } => tick,
        other => panic!("expected the last result, got {other:?}"),
    };
    assert!(final_tick > last_tick);
    let mut updates = 0;
    loop {
        match watcher.recv() {
            ServerMessage::TickUpdate { tick, query_sets, .. } => {
                updates += 1;
                for set in query_sets {
                    for table in &set.tables {
                        caches[set.query_set_id as usize - 1].apply(&columns, table);
                    }
                }
                if tick >= final_tick {
                    break;
                }
            }
            other => panic!("expected TickUpdate, got {other:?}"),
        }
    }
    assert!(updates > 20, "{updates} updates");
    for (i, query) in queries.iter().enumerate() {
        watcher.send(&ClientMessage::OneOffQuery { request_id: i as u32, sql: query.to_string() });
        let rows = match watcher.recv() {
            ServerMessage::QueryResult { outcome: Ok(rows), .. } => rows.rows,
            other => panic!("expected QueryResult, got {other:?}"),
        };
        let expected: std::collections::BTreeMap<Vec<u8>, Vec<u8>> =
            rows.iter().map(|r| (r[..8].to_vec(), r.to_vec())).collect();
        assert!(!expected.is_empty());
        assert_eq!(caches[i].rows, expected, "{query}");
    }
}

fn hero_columns(server: &TestServer) -> Vec<ValueType> {
    match row_type(server, "game", "hero") {
        ValueType::Product(p) => p.fields.into_iter().map(|f| f.ty).collect(),
        _ => unreachable!(),
    }
}

fn create_hero(client: &mut Client, id: u32, name: &str, level: u32) -> u64 {
    client.call(
        id,
        "create_hero",
        [name.to_string().to_bytes(), level.to_bytes(), 0u32.to_bytes(), vec![0]].concat(),
    );
    match client.recv() {
        ServerMessage::ReducerResult { outcome: Ok(_), tick, .. } => tick,
        other => panic!("expected a result, got {other:?}"),
    }
}

/// The rows of `query`, by primary key, as a one-off query returns them.
fn query_rows(client: &mut Client, query: &str) -> std::collections::BTreeMap<Vec<u8>, Vec<u8>> {
    client.send(&ClientMessage::OneOffQuery { request_id: 77, sql: query.into() });
    match client.recv() {
        ServerMessage::QueryResult { outcome: Ok(rows), .. } => {
            rows.rows.iter().map(|r| (r[..8].to_vec(), r.to_vec())).collect()
        }
        other => panic!("expected QueryResult, got {other:?}"),
    }
}

/// A client that reconnects with its token and the last tick it applied gets only what
/// it missed, tick by tick, which brings its kept rows up to date; one whose tick the
/// server's bounded history no longer covers gets every row again.
#[test]
fn reconnecting_clients_resume_from_their_last_tick() {
    let config = ServerConfig { resume_history_ticks_max: 6, ..ServerConfig::default() };
    let server = start("clients-resume", config);
    let owner = new_token(server.addr);
    assert_eq!(publish(server.addr, "game", &owner, "tickdb-test-features").status, 201);
    let columns = hero_columns(&server);
    let query = "SELECT * FROM hero WHERE level >= 3";
    let mut actor = connect(server.addr, "game", "");
    actor.recv();
    create_hero(&mut actor, 1, "a", 5);

    let mut watcher = connect(server.addr, "game", &format!("?token={owner}"));
    let ServerMessage::IdentityToken { epoch, .. } = watcher.recv() else { panic!("no identity") };
    watcher.subscribe(1, &[query]);
    let mut cache = Cache::default();
    let mut last = match watcher.recv() {
        ServerMessage::SubscribeApplied { tables, tick, resumed: false, .. } => {
            cache.rows = tables[0].rows.iter().map(|r| (r[..8].to_vec(), r.to_vec())).collect();
            tick
        }
        other => panic!("expected SubscribeApplied, got {other:?}"),
    };
    let seen = create_hero(&mut actor, 2, "b", 4);
    while last < seen {
        if let ServerMessage::TickUpdate { tick, query_sets, .. } = watcher.recv() {
            query_sets.iter().flat_map(|s| &s.tables).for_each(|t| cache.apply(&columns, t));
            last = tick;
        }
    }
    drop(watcher);

    // What the watcher misses: an insert, one outside its query, a rename, a delete.
    create_hero(&mut actor, 3, "c", 9);
    create_hero(&mut actor, 4, "low", 1);
    actor.call(5, "rename", [1u64.to_bytes(), "a2".to_string().to_bytes()].concat());
    actor.recv();
    actor.call(6, "delete_hero", "b".to_string().to_bytes());
    actor.recv();

    let mut back = connect(server.addr, "game", &format!("?token={owner}"));
    back.recv();
    // From another run of the database (another epoch), the same tick means nothing.
    let subscribe = |resume_epoch| ClientMessage::Subscribe {
        query_set_id: 1,
        queries: vec![query.into()],
        resume_after_tick: last,
        resume_epoch,
    };
    back.send(&subscribe(epoch.wrapping_add(1)));
    assert!(matches!(back.recv(), ServerMessage::SubscribeApplied { resumed: false, .. }));
    back.send(&subscribe(epoch));
    match back.recv() {
        ServerMessage::SubscribeApplied { resumed: true, tables, missed, .. } => {
            assert!(tables.is_empty());
            assert_eq!(missed.len(), 3, "three of the four missed ticks changed the query: {missed:?}");
            missed.iter().flat_map(|m| &m.tables).for_each(|t| cache.apply(&columns, t));
        }
        other => panic!("expected a resumed SubscribeApplied, got {other:?}"),
    }
    assert_eq!(cache.rows, query_rows(&mut back, query));
    assert_eq!(cache.rows.len(), 2, "a2 and c");

    // Past the history's six ticks, a resume gets every row.
    for i in 0..8 {
        create_hero(&mut actor, 10 + i, &format!("x{i}"), 3);
    }
    let mut late = connect(server.addr, "game", &format!("?token={owner}"));
    late.recv();
    late.send(&ClientMessage::Subscribe {
        query_set_id: 1,
        queries: vec![query.into()],
        resume_after_tick: last,
        resume_epoch: epoch,
    });
    match late.recv() {
        ServerMessage::SubscribeApplied { resumed: false, tables, missed, .. } => {
            assert!(missed.is_empty());
            assert_eq!(tables[0].rows.len(), 10);
        }
        other => panic!("expected a full SubscribeApplied, got {other:?}"),
    }
}

/// Reads the next JSON text message.
fn recv_json(client: &mut Client) -> serde_json::Value {
    loop {
        match client.ws.read().unwrap() {
            tungstenite::Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_) => {}
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

fn send_json(client: &mut Client, value: serde_json::Value) {
    client.ws.send(tungstenite::Message::Text(value.to_string().into())).unwrap();
}

/// A client that connects with `?format=json` speaks the same protocol in JSON text:
/// arguments and rows as JSON values by their types, updates as the key and the
/// changed columns by name; a malformed JSON message closes it with a reason.
#[test]
fn json_clients_speak_the_same_protocol() {
    use serde_json::json;
    let server = start("clients-json", ServerConfig::default());
    let owner = new_token(server.addr);
    assert_eq!(publish(server.addr, "chat", &owner, "tickdb-example-chat").status, 201);
    let mut client = connect(server.addr, "chat", "?format=json");
    let hello = recv_json(&mut client);
    let me = hello["IdentityToken"]["identity"].as_str().unwrap().to_string();
    assert_eq!(me.len(), 64);
    send_json(
        &mut client,
        json!({"Subscribe": {"query_set_id": 3, "queries": ["SELECT * FROM user", "SELECT * FROM message"]}}),
    );
    let applied = recv_json(&mut client);
    assert_eq!(applied["SubscribeApplied"]["tables"][0]["rows"], json!([[me, null, true]]), "{applied}");
    send_json(&mut client, json!({"CallReducer": {"request_id": 1, "reducer": "set_name", "args": ["Ada"]}}));
    assert_eq!(recv_json(&mut client)["ReducerResult"]["ok"], "");
    let update = recv_json(&mut client);
    let user = &update["TickUpdate"]["query_sets"][0]["tables"][0];
    assert_eq!(user["updates"], json!([{"key": [me], "changed": {"name": "Ada"}}]), "{update}");
    send_json(
        &mut client,
        json!({"CallReducer": {"request_id": 2, "reducer": "send_message", "args": {"text": "hi"}}}),
    );
    recv_json(&mut client);
    let update = recv_json(&mut client);
    let message = &update["TickUpdate"]["query_sets"][0]["tables"][0];
    assert_eq!(message["table_name"], "message");
    assert_eq!(message["inserts"][0][2], "hi", "{update}");
    send_json(&mut client, json!({"OneOffQuery": {"request_id": 4, "sql": "SELECT name FROM user"}}));
    assert_eq!(recv_json(&mut client)["QueryResult"]["rows"], json!([["Ada"]]));
    send_json(&mut client, json!({"CallReducer": {"request_id": 5, "reducer": "send_message", "args": [7]}}));
    let (code, reason) = client.closed();
    assert_eq!(code, tungstenite::protocol::frame::coding::CloseCode::Invalid);
    assert!(reason.contains("text: expected String, found a number"), "{reason}");
}

/// A subscription too big for one slice's budget is read between ticks, slice by
/// slice, while writes go on; its initial rows, then its updates, equal the table.
#[test]
fn big_subscriptions_are_read_in_slices() {
    let config = ServerConfig {
        initial_slice: tickdb_sql::QueryLimits { rows_max: 16, time_max: std::time::Duration::from_secs(1) },
        ..ServerConfig::default()
    };
    let server = start("clients-slices", config);
    let owner = new_token(server.addr);
    assert_eq!(publish(server.addr, "game", &owner, "tickdb-test-features").status, 201);
    let insert = |first: u64, n: u64| {
        let values: Vec<String> = (first..first + n).map(|id| format!("({id}, 'k{id}', {id})")).collect();
        let sql = format!("INSERT INTO event (id, kind, micros) VALUES {}", values.join(", "));
        let reply = http(server.addr, "POST", "/v1/database/game/sql", Some(&owner), sql.as_bytes());
        assert_eq!(reply.status, 200, "{}", reply.text());
    };
    insert(1000, 300);
    let mut client = connect(server.addr, "game", &format!("?token={owner}"));
    client.recv();
    client.subscribe(1, &["SELECT * FROM event WHERE micros >= 1000"]);
    // Writes while the scan may still be going: they are in the rows or in later updates.
    insert(2000, 40);
    let mut rows: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = match client.recv() {
        ServerMessage::SubscribeApplied { tables, .. } => {
            tables[0].rows.iter().map(|r| (r[..8].to_vec(), r.to_vec())).collect()
        }
        other => panic!("expected SubscribeApplied, got {other:?}"),
    };
    let total = |rows: &std::collections::BTreeMap<Vec<u8>, Vec<u8>>| rows.len();
    while total(&rows) < 340 {
        match client.recv() {
            ServerMessage::TickUpdate { query_sets, .. } => {
                for row in query_sets[0].tables[0].inserts.iter() {
                    assert!(rows.insert(row[..8].to_vec(), row.to_vec()).is_none(), "a row twice");
                }
            }
            other => panic!("expected TickUpdate, got {other:?}"),
        }
    }
    assert_eq!(rows, query_rows(&mut client, "SELECT * FROM event WHERE micros >= 1000"));
}

/// With several event loop threads, connections are spread over them and every client
/// is served: each gets its identity, its subscription's rows and every update, and
/// HTTP requests answered on any loop.
#[test]
fn several_event_loops_serve_every_client() {
    let server = start("clients-loops", ServerConfig { io_threads: 3, ..ServerConfig::default() });
    let owner = new_token(server.addr);
    assert_eq!(publish(server.addr, "chat", &owner, "tickdb-example-chat").status, 201);
    let mut clients: Vec<Client> = (0..7).map(|_| connect(server.addr, "chat", "")).collect();
    for c in &mut clients {
        c.recv();
        c.subscribe(1, &["SELECT * FROM message"]);
        assert!(matches!(c.recv(), ServerMessage::SubscribeApplied { .. }));
    }
    for (i, sender) in [0usize, 4].into_iter().enumerate() {
        clients[sender].call(i as u32, "send_message", format!("from {sender}").to_bytes());
        for (j, c) in clients.iter_mut().enumerate() {
            loop {
                match c.recv() {
                    ServerMessage::TickUpdate { query_sets, .. } => {
                        let row = query_sets[0].tables[0].inserts.row(0).to_vec();
                        assert!(row.ends_with(format!("from {sender}").as_bytes()), "client {j}");
                        break;
                    }
                    ServerMessage::ReducerResult { outcome, .. } => assert!(outcome.is_ok() && j == sender),
                    other => panic!("client {j}: {other:?}"),
                }
            }
        }
    }
    for _ in 0..6 {
        assert_eq!(http(server.addr, "GET", "/v1/database", None, b"").status, 200);
    }
}

/// A join subscription that reads more rows in a tick than the server's query budget
/// allows fails alone: its holder gets a SubscriptionError saying why, and the
/// client's other query set goes on receiving updates.
#[test]
fn a_query_past_its_budget_fails_alone() {
    let config = ServerConfig {
        query_limits: tickdb_sql::QueryLimits { rows_max: 3, time_max: std::time::Duration::from_secs(5) },
        ..ServerConfig::default()
    };
    let server = start("clients-budget", config);
    let owner = new_token(server.addr);
    assert_eq!(publish(server.addr, "game", &owner, "tickdb-test-features").status, 201);
    let mut client = connect(server.addr, "game", &format!("?token={owner}"));
    client.recv();
    for (i, name) in ["k1", "k2", "k3", "k4", "k5"].into_iter().enumerate() {
        create_hero(&mut client, i as u32, name, 1);
    }
    client.subscribe(1, &["SELECT hero.* FROM hero JOIN config ON hero.name = config.key"]);
    client.subscribe(2, &["SELECT * FROM event"]);
    for _ in 0..2 {
        assert!(matches!(client.recv(), ServerMessage::SubscribeApplied { .. }));
    }
    // Five config rows in one tick: the join's delta reads a hero for each.
    let sql = "INSERT INTO config (key, value) VALUES ('k1', 1), ('k2', 2), ('k3', 3), ('k4', 4), ('k5', 5)";
    let reply = http(server.addr, "POST", "/v1/database/game/sql", Some(&owner), sql.as_bytes());
    assert_eq!(reply.status, 200, "{}", reply.text());
    match client.recv() {
        ServerMessage::SubscriptionError { query_set_id: 1, message } => {
            assert!(message.contains("failed and was dropped"), "{message}")
        }
        other => panic!("expected the join's failure, got {other:?}"),
    }
    // The other set still gets its updates.
    let sql = "INSERT INTO event (id, kind, micros) VALUES (77, 'after', 0)";
    assert_eq!(http(server.addr, "POST", "/v1/database/game/sql", Some(&owner), sql.as_bytes()).status, 200);
    match client.recv() {
        ServerMessage::TickUpdate { query_sets, .. } => {
            assert_eq!(query_sets.len(), 1);
            assert_eq!(query_sets[0].query_set_id, 2);
        }
        other => panic!("expected the event's update, got {other:?}"),
    }
}

/// The next ReducerResult for `request_id`, skipping tick updates.
fn result_of(client: &mut Client, request_id: u32) -> ServerMessage {
    loop {
        match client.recv() {
            ServerMessage::TickUpdate { .. } => {}
            m @ ServerMessage::ReducerResult { .. } => {
                let ServerMessage::ReducerResult { request_id: id, .. } = &m else { unreachable!() };
                assert_eq!(*id, request_id);
                return m;
            }
            other => panic!("expected ReducerResult, got {other:?}"),
        }
    }
}

/// A subscribed caller's result carries what its call alone changed in its query
/// sets: not other calls' changes, not sets the call did not touch; a caller that
/// never subscribed gets none.
#[test]
fn a_callers_result_carries_its_own_changes() {
    let server = start("own-changes", ServerConfig::default());
    let owner = new_token(server.addr);
    assert_eq!(publish(server.addr, "chat", &owner, "tickdb-example-chat").status, 201);
    let ty = row_type(&server, "chat", "message");
    let mut ada = connect(server.addr, "chat", "");
    let (ada_id, _) = identity_of(ada.recv());
    ada.subscribe(1, &["SELECT * FROM message"]);
    ada.subscribe(2, &["SELECT * FROM user"]);
    for _ in 0..2 {
        assert!(matches!(ada.recv(), ServerMessage::SubscribeApplied { .. }));
    }
    let mut bo = connect(server.addr, "chat", "");
    identity_of(bo.recv());

    // Both call at once: each result holds its own message only.
    ada.call(1, "send_message", "mine".to_string().to_bytes());
    bo.call(1, "send_message", "his".to_string().to_bytes());
    match result_of(&mut ada, 1) {
        ServerMessage::ReducerResult { outcome: Ok(_), changes, .. } => {
            assert_eq!(changes.len(), 1, "{changes:?}");
            assert_eq!(changes[0].query_set_id, 1);
            let inserts = changes[0].tables[0].inserts.iter().map(<[u8]>::to_vec);
            assert_eq!(texts(&ty, inserts), ["mine"]);
        }
        other => panic!("{other:?}"),
    }
    match result_of(&mut bo, 1) {
        ServerMessage::ReducerResult { outcome: Ok(_), changes, .. } => {
            assert!(changes.is_empty(), "{changes:?}")
        }
        other => panic!("{other:?}"),
    }
    // Renaming touches the user set alone, as an update by primary key.
    ada.call(2, "set_name", "Ada".to_string().to_bytes());
    match result_of(&mut ada, 2) {
        ServerMessage::ReducerResult { outcome: Ok(_), changes, .. } => {
            assert_eq!(changes.len(), 1, "{changes:?}");
            assert_eq!(changes[0].query_set_id, 2);
            let updates = &changes[0].tables[0].updates;
            assert_eq!((updates.len(), updates.keys.row(0)), (1, &ada_id.0[..]));
        }
        other => panic!("{other:?}"),
    }
    // A failed call changed nothing.
    ada.call(3, "send_message", " ".to_string().to_bytes());
    match result_of(&mut ada, 3) {
        ServerMessage::ReducerResult { outcome: Err(_), changes, .. } => assert!(changes.is_empty()),
        other => panic!("{other:?}"),
    }
    // A client that asked for light results gets none of its own changes in them:
    // they come in the tick's update only.
    let mut cy = connect(server.addr, "chat", "?light=true");
    identity_of(cy.recv());
    cy.subscribe(1, &["SELECT * FROM message"]);
    assert!(matches!(cy.recv(), ServerMessage::SubscribeApplied { .. }));
    cy.call(1, "send_message", "light".to_string().to_bytes());
    let mut result = None;
    let mut seen = Vec::new();
    while result.is_none() || seen.is_empty() {
        match cy.recv() {
            ServerMessage::ReducerResult { outcome: Ok(_), changes, .. } => result = Some(changes),
            ServerMessage::TickUpdate { query_sets, .. } => {
                let rows = query_sets[0].tables[0].inserts.iter().map(<[u8]>::to_vec);
                seen.extend(texts(&ty, rows));
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(result, Some(Vec::new()), "a light result carries no changes");
    assert_eq!(seen, ["light"]);
    let Err((status, refused)) = try_connect(server.addr, "chat", "?light=yes") else {
        panic!("light=yes was accepted")
    };
    assert_eq!(status, 400);
    assert!(refused.contains("`light` is true or false"), "{refused}");
}

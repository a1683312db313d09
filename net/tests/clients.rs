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
    let schema = served.module.def.table(table).unwrap().clone();
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

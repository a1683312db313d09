//! INSERT, UPDATE and DELETE: their effects, their mistakes, and their run as owner-only
//! transactions in the tick loop, logged like any other.

use std::sync::{Arc, mpsc};

use tickdb_engine::{
    CallError, Database, EngineConfig, HostConfig, ModuleHost, ModuleSystem, ReplyTo, SplitMix64,
    SystemClock, TableId, Ticker,
};
use tickdb_sql::{ErrorKind, QueryLimits, dml_work, execute, query};
use tickdb_wasm_abi::{ConnectionId, Identity, TableSchema, Value, ValueType};

fn db() -> (Database, TableId) {
    let mut db = Database::new(EngineConfig::default()).unwrap();
    let schema = TableSchema::builder("item")
        .column("id", ValueType::U64)
        .column("name", ValueType::String)
        .column("owner", ValueType::option(ValueType::U32))
        .column("qty", ValueType::I32)
        .primary_key(["id"])
        .auto_inc("id")
        .build()
        .unwrap();
    let t = db.create_table(schema).unwrap();
    (db, t)
}

fn rows(db: &Database, sql: &str) -> Vec<Vec<Value>> {
    query(db, sql, &QueryLimits::default()).unwrap_or_else(|e| panic!("{sql}: {e}")).rows
}

#[test]
fn dml_changes_rows() {
    let (mut db, _) = db();
    let limits = QueryLimits::default();
    let mut tx = db.begin();
    let n = execute(
        &mut tx,
        "INSERT INTO item (name, owner, qty) VALUES ('sword', 7, 1), ('shield', NULL, 2)",
        &limits,
    );
    assert_eq!(n, Ok(2));
    assert_eq!(execute(&mut tx, "INSERT INTO item VALUES (10, 'bow', 3, -1)", &limits), Ok(1));
    tx.commit();
    assert_eq!(
        rows(&db, "SELECT id, name FROM item ORDER BY id"),
        vec![
            vec![Value::U64(1), Value::string("sword")],
            vec![Value::U64(2), Value::string("shield")],
            vec![Value::U64(10), Value::string("bow")],
        ]
    );
    assert_eq!(rows(&db, "SELECT id FROM item WHERE owner IS NULL"), vec![vec![Value::U64(2)]]);

    let mut tx = db.begin();
    assert_eq!(execute(&mut tx, "UPDATE item SET qty = 5, owner = NULL WHERE qty < 2", &limits), Ok(2));
    assert_eq!(execute(&mut tx, "DELETE FROM item WHERE name = 'shield'", &limits), Ok(1));
    assert_eq!(execute(&mut tx, "DELETE FROM item WHERE id = 99", &limits), Ok(0));
    tx.commit();
    assert_eq!(
        rows(&db, "SELECT id, qty FROM item ORDER BY id"),
        vec![vec![Value::U64(1), Value::I32(5)], vec![Value::U64(10), Value::I32(5)]]
    );
}

#[test]
fn dml_mistakes_change_nothing() {
    let (mut db, t) = db();
    let limits = QueryLimits::default();
    let mut tx = db.begin();
    let cases: &[(&str, ErrorKind, &str)] = &[
        ("INSERT INTO item (name, qty) VALUES ('a')", ErrorKind::TypeMismatch, "1 values for 2 columns"),
        ("INSERT INTO item (name) VALUES ('a')", ErrorKind::TypeMismatch, "`qty` has no value"),
        (
            "INSERT INTO item (name, qty) VALUES ('a', 'many')",
            ErrorKind::TypeMismatch,
            "column `qty` is a i32",
        ),
        (
            "INSERT INTO items (name, qty) VALUES ('a', 1)",
            ErrorKind::UnknownTable,
            "no table is named `items`",
        ),
        ("UPDATE item SET weight = 3", ErrorKind::UnknownColumn, "no column `weight`"),
        ("DELETE FROM item WHERE qty = 'x'", ErrorKind::TypeMismatch, "column `qty`"),
        ("DROP TABLE item", ErrorKind::Unsupported, "only INSERT, UPDATE and DELETE"),
    ];
    for (sql, kind, message) in cases {
        let e = execute(&mut tx, sql, &limits).expect_err(sql);
        assert_eq!(e.kind, *kind, "{sql}: {e}");
        assert!(e.message.contains(message), "{sql}: {e}");
    }
    assert!(tx.table(t).is_empty());
}

/// Through the tick loop: only the owner may run DML; the change commits as one
/// transaction, its reply carries the count, and the tick's log records it.
#[test]
fn dml_runs_in_the_tick_loop_for_the_owner_only() {
    let host = ModuleHost::new(HostConfig::default()).unwrap();
    let module = host.load(&tickdb_test_modules::wasm("tickdb-test-features")).unwrap();
    let mut db = Database::new(EngineConfig::default()).unwrap();
    let system = ModuleSystem::new(&host, Arc::clone(&module), &mut db, Identity::default()).unwrap();
    let mut ticker = Ticker::new(db, system, Box::new(SystemClock), Box::new(SplitMix64::new(1)));
    ticker.keep_log();
    let (owner, stranger) = (Identity([1; 32]), Identity([2; 32]));
    let (to, replies) = mpsc::channel();
    let work = |who: Identity, sql: &str, id: u64| {
        let reply = Some(ReplyTo { id, to: to.clone() });
        dml_work(owner, who, ConnectionId([3; 16]), sql.to_string(), QueryLimits::default(), reply)
    };
    let output = ticker.run_tick(
        [
            work(owner, "INSERT INTO config (key, value) VALUES ('a', 1), ('b', 2)", 1),
            work(stranger, "DELETE FROM config", 2),
            work(owner, "UPDATE config SET value = 9 WHERE key = 'b'", 3),
        ],
        false,
    );
    let mut got: Vec<_> = replies.try_iter().map(|r| (r.id, r.outcome)).collect();
    got.sort_by_key(|(id, _)| *id);
    assert_eq!(got[0].1, Ok(2u64.to_le_bytes().to_vec()));
    assert!(
        matches!(&got[1].1, Err(CallError::Failed(m)) if m.contains("only the database's owner")),
        "{got:?}"
    );
    assert_eq!(got[2].1, Ok(1u64.to_le_bytes().to_vec()));
    // The two owner statements committed and are logged (the module's tick system ran
    // in this tick too, wrote nothing, and is not); the stranger's rolled back.
    assert_eq!(output.rolled_back, 1);
    let log = output.log.unwrap();
    assert_eq!(log.tx_count, 2);
    let logged_sql = log.payload.windows(3).filter(|w| *w == b"sql").count();
    assert!(logged_sql >= 2, "the log records the statements as calls of `sql`");
    assert_eq!(
        rows(ticker.db(), "SELECT key, value FROM config ORDER BY key"),
        vec![vec![Value::string("a"), Value::U64(1)], vec![Value::string("b"), Value::U64(9)]]
    );
}

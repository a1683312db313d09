//! Subscriptions: for random data, queries and ticks, applying each tick's delta to
//! the initial result always gives what running the query on the new state gives.

mod common;

use common::{apply, multiset};
use proptest::prelude::*;
use tickdb_engine::{Database, EngineConfig, TableId};
use tickdb_sql::{QueryLimits, Subscription};
use tickdb_wasm_abi::{TableSchema, Value, ValueType};

fn db() -> (Database, TableId) {
    let mut db = Database::new(EngineConfig::default()).unwrap();
    let schema = TableSchema::builder("unit")
        .column("id", ValueType::U32)
        .column("zone", ValueType::U8)
        .column("hp", ValueType::I32)
        .column("tag", ValueType::option(ValueType::String))
        .primary_key(["id"])
        .btree_index(["zone"])
        .build()
        .unwrap();
    let t = db.create_table(schema).unwrap();
    (db, t)
}

#[derive(Debug, Clone)]
enum Op {
    Upsert { id: u32, zone: u8, hp: i32, tag: Option<u8> },
    Delete { id: u32 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..24u32, 0..4u8, -5..10i32, proptest::option::of(0..3u8))
            .prop_map(|(id, zone, hp, tag)| Op::Upsert { id, zone, hp, tag }),
        1 => (0..24u32).prop_map(|id| Op::Delete { id }),
    ]
}

const QUERIES: &[&str] = &[
    "SELECT * FROM unit",
    "SELECT * FROM unit WHERE zone = 2",
    "SELECT * FROM unit WHERE hp > 3",
    "SELECT * FROM unit WHERE zone IN (0, 3) AND hp <= 4",
    "SELECT * FROM unit WHERE zone = 1 OR hp BETWEEN -2 AND 1",
    "SELECT * FROM unit WHERE NOT zone = 1 AND tag IS NOT NULL",
    "SELECT * FROM unit WHERE tag = 'b' OR tag IS NULL",
];

fn row(id: u32, zone: u8, hp: i32, tag: Option<u8>) -> Vec<Value> {
    let tag = tag.map(|t| Box::new(Value::string(((b'a' + t) as char).to_string())));
    vec![Value::U32(id), Value::U8(zone), Value::I32(hp), Value::Option(tag)]
}

/// Applies one tick of operations as one transaction; returns its changes.
fn tick(db: &mut Database, t: TableId, ops: &[Op]) -> Vec<tickdb_engine::TableChanges> {
    let mut tx = db.begin();
    for op in ops {
        match *op {
            Op::Upsert { id, zone, hp, tag } => {
                let values = row(id, zone, hp, tag);
                match tx.find_by_primary_key(t, &[Value::U32(id)]).unwrap() {
                    Some(existing) => tx.update_values(t, existing, &values).unwrap(),
                    None => {
                        tx.insert_values(t, &values).unwrap();
                    }
                }
            }
            Op::Delete { id } => {
                if let Some(existing) = tx.find_by_primary_key(t, &[Value::U32(id)]).unwrap() {
                    tx.delete(t, existing).unwrap();
                }
            }
        }
    }
    let changeset = tx.commit();
    changeset.table_changes(db)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn deltas_keep_results_equal_to_rerunning_the_query(
        initial in proptest::collection::vec(op(), 0..30),
        ticks in proptest::collection::vec(proptest::collection::vec(op(), 0..12), 1..8),
        query in 0..QUERIES.len(),
    ) {
        let (mut db, t) = db();
        tick(&mut db, t, &initial);
        let sub = Subscription::new(&db, QUERIES[query]).unwrap();
        let limits = QueryLimits::default();
        let mut result = multiset(sub.initial(&db, &limits).unwrap());
        for ops in &ticks {
            for changes in tick(&mut db, t, ops) {
                let delta = sub.delta(&db, std::slice::from_ref(&changes), &limits).unwrap();
                apply(&mut result, delta).map_err(TestCaseError::fail)?;
            }
            let rerun = multiset(sub.initial(&db, &limits).unwrap());
            prop_assert_eq!(&result, &rerun, "query {}", QUERIES[query]);
        }
    }
}

#[test]
fn only_whole_rows_of_one_table_subscribe() {
    let (db, _) = db();
    for sql in [
        "SELECT id FROM unit",
        "SELECT u.*, v.id FROM unit u JOIN unit v ON u.id = v.id",
        "SELECT COUNT(*) FROM unit",
        "SELECT * FROM unit ORDER BY hp",
        "SELECT * FROM unit LIMIT 3",
    ] {
        let e = Subscription::new(&db, sql).unwrap_err();
        assert!(e.message.contains("subscriptions"), "{sql}: {e}");
    }
    assert!(Subscription::new(&db, "SELECT * FROM unit WHERE hp > 1").is_ok());
}

fn sorted(mut d: tickdb_sql::Delta<'_>) -> tickdb_sql::Delta<'_> {
    d.inserts.sort();
    d.deletes.sort();
    d.updates.sort();
    d
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, ..ProptestConfig::default() })]

    /// A set evaluates grouped and shared queries to the same deltas as each query alone.
    #[test]
    fn a_subscription_set_gives_each_query_its_own_delta(
        initial in proptest::collection::vec(op(), 0..30),
        ticks in proptest::collection::vec(proptest::collection::vec(op(), 0..12), 1..6),
    ) {
        let (mut db, t) = db();
        tick(&mut db, t, &initial);
        let mut set = tickdb_sql::SubscriptionSet::default();
        let mut queries: Vec<String> = QUERIES.iter().map(|q| q.to_string()).collect();
        queries.extend((0..4).map(|z| format!("SELECT * FROM unit WHERE zone = {z}")));
        queries.extend(["SELECT * FROM unit WHERE tag = 'a'".to_string(), "SELECT * FROM unit WHERE hp = 3".to_string()]);
        // Windows, found through the area-of-interest index.
        queries.extend([
            "SELECT * FROM unit WHERE zone BETWEEN 1 AND 2 AND hp BETWEEN 0 AND 5",
            "SELECT * FROM unit WHERE zone > 0 AND zone < 3 AND hp >= -2 AND hp <= 4 AND tag IS NULL",
            "SELECT * FROM unit WHERE id BETWEEN 3 AND 15 AND zone BETWEEN 0 AND 2 AND hp BETWEEN -5 AND 3",
            "SELECT * FROM unit WHERE zone BETWEEN 2 AND 2 AND hp BETWEEN 9 AND 1",
            "SELECT * FROM unit WHERE zone BETWEEN 0 AND 3 AND hp BETWEEN -1000000 AND 1000000",
            // Strict bounds: the window only narrows the search.
            "SELECT * FROM unit WHERE zone > 0 AND zone < 3 AND hp > -2 AND hp < 4",
            // Two bounds on a side: the narrower one counts.
            "SELECT * FROM unit WHERE zone >= 1 AND zone >= 2 AND zone <= 3 AND hp BETWEEN 0 AND 5 AND hp <= 3",
        ].map(String::from));
        let ids: Vec<_> = queries.iter().map(|q| set.subscribe(&db, q).unwrap()).collect();
        let stats = set.stats();
        prop_assert_eq!((stats.grouped, stats.windows, stats.joins), (6, 7, 0));
        for ops in &ticks {
            let changes = tick(&mut db, t, ops);
            let evaluated = set.evaluate(&db, &changes);
            prop_assert!(evaluated.failed.is_empty());
            let deltas = evaluated.deltas;
            for (q, id) in queries.iter().zip(&ids) {
                let alone = Subscription::new(&db, q).unwrap();
                let mut expected = tickdb_sql::Delta::default();
                for c in &changes {
                    let d = alone.delta(&db, std::slice::from_ref(c), &QueryLimits::default()).unwrap();
                    expected.inserts.extend(d.inserts);
                    expected.deletes.extend(d.deletes);
                    expected.updates.extend(d.updates);
                }
                let got = deltas.get(id).cloned().unwrap_or_default();
                prop_assert_eq!(sorted(got), sorted(expected), "{}", q);
            }
        }
    }
}

#[test]
fn identical_queries_are_shared() {
    let (db, _) = db();
    let mut set = tickdb_sql::SubscriptionSet::default();
    let a = set.subscribe(&db, "SELECT * FROM unit WHERE zone = 2").unwrap();
    let b = set.subscribe(&db, "select *  from unit where zone=2").unwrap();
    let c = set.subscribe(&db, "SELECT * FROM unit u WHERE u.zone = 2").unwrap();
    let d = set.subscribe(&db, "SELECT * FROM unit WHERE zone = 3").unwrap();
    assert_eq!((a, b), (c, c), "however written, one query");
    assert_ne!(a, d);
    assert_eq!(set.len(), 2);
    // The query stays until its last holder leaves.
    set.unsubscribe(a);
    set.unsubscribe(b);
    assert_eq!(set.len(), 2, "one holder left");
    set.unsubscribe(c);
    assert_eq!(set.len(), 1);
    assert!(set.query(d).is_some() && set.query(a).is_none());
}

//! Initial rows in slices: a scan that reads a bounded number of rows at a time while
//! ticks change the tables in between ends with exactly the rows the query returns
//! then, over one table or through a join.

mod common;

use common::multiset;
use proptest::prelude::*;
use tickdb_engine::{Database, EngineConfig, TableChanges, TableId};
use tickdb_sql::{InitialScan, QueryLimits, Subscription};
use tickdb_wasm_abi::{TableSchema, Value, ValueType};

/// `unit(id pk, zone btree, hp)` with `rows` rows, and `tag(id pk, unit_id btree, n)`
/// with a tag on every third unit.
fn db(rows: u32) -> (Database, TableId, TableId) {
    let mut db = Database::new(EngineConfig::default()).unwrap();
    let unit = TableSchema::builder("unit")
        .column("id", ValueType::U32)
        .column("zone", ValueType::U8)
        .column("hp", ValueType::I32)
        .primary_key(["id"])
        .btree_index(["zone"])
        .build()
        .unwrap();
    let tag = TableSchema::builder("tag")
        .column("id", ValueType::U32)
        .column("unit_id", ValueType::U32)
        .column("n", ValueType::I8)
        .primary_key(["id"])
        .btree_index(["unit_id"])
        .build()
        .unwrap();
    let (u, t) = (db.create_table(unit).unwrap(), db.create_table(tag).unwrap());
    let mut tx = db.begin();
    for id in 0..rows {
        tx.insert_values(u, &[Value::U32(id), Value::U8((id % 7) as u8), Value::I32(id as i32 % 11 - 5)])
            .unwrap();
        if id % 3 == 0 {
            tx.insert_values(t, &[Value::U32(id), Value::U32(id), Value::I8((id % 5) as i8 - 1)]).unwrap();
        }
    }
    tx.commit();
    (db, u, t)
}

#[derive(Debug, Clone)]
enum Op {
    Unit { id: u32, zone: u8, hp: i32 },
    Tag { id: u32, unit_id: u32, n: i8 },
    Delete { tag: bool, id: u32 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..900u32, 0..7u8, -6..6i32).prop_map(|(id, zone, hp)| Op::Unit { id, zone, hp }),
        2 => (0..900u32, 0..900u32, -2..3i8).prop_map(|(id, unit_id, n)| Op::Tag { id, unit_id, n }),
        1 => (any::<bool>(), 0..900u32).prop_map(|(tag, id)| Op::Delete { tag, id }),
    ]
}

fn tick(db: &mut Database, (u, t): (TableId, TableId), ops: &[Op]) -> Vec<TableChanges> {
    let mut tx = db.begin();
    for op in ops {
        let (table, id, row) = match *op {
            Op::Unit { id, zone, hp } => (u, id, Some(vec![Value::U32(id), Value::U8(zone), Value::I32(hp)])),
            Op::Tag { id, unit_id, n } => {
                (t, id, Some(vec![Value::U32(id), Value::U32(unit_id), Value::I8(n)]))
            }
            Op::Delete { tag, id } => (if tag { t } else { u }, id, None),
        };
        let existing = tx.find_by_primary_key(table, &[Value::U32(id)]).unwrap();
        match (existing, row) {
            (Some(at), Some(row)) => tx.update_values(table, at, &row).unwrap(),
            (None, Some(row)) => {
                tx.insert_values(table, &row).unwrap();
            }
            (Some(at), None) => tx.delete(table, at).unwrap(),
            (None, None) => {}
        }
    }
    tx.commit().table_changes(db)
}

const QUERIES: &[&str] = &[
    "SELECT * FROM unit WHERE hp > 0",
    "SELECT * FROM unit",
    "SELECT unit.* FROM unit JOIN tag ON unit.id = tag.unit_id WHERE tag.n >= 0",
    "SELECT unit.* FROM tag JOIN unit ON unit.id = tag.unit_id WHERE unit.hp <> 1",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 150, ..ProptestConfig::default() })]

    #[test]
    fn a_sliced_scan_ends_with_the_rows_of_its_last_tick(
        rows in 0..700u32,
        per_step in 1..150u64,
        ticks in proptest::collection::vec(proptest::collection::vec(op(), 0..30), 40),
        query in 0..QUERIES.len(),
    ) {
        let (mut db, u, t) = db(rows);
        let sub = Subscription::new(&db, QUERIES[query]).unwrap();
        let slice = QueryLimits { rows_max: per_step, ..QueryLimits::default() };
        let mut scan = InitialScan::start(&db, &sub, &slice, &QueryLimits::default()).unwrap();
        let mut steps = 0;
        let mut ticks = ticks.iter().cycle();
        while !scan.step(&db, &slice).unwrap() {
            steps += 1;
            let changes = tick(&mut db, (u, t), ticks.next().unwrap());
            scan.apply(&db, &changes).unwrap();
        }
        prop_assert!(steps as u64 >= u64::from(rows) / per_step / 2, "{steps} steps");
        let got = multiset(scan.rows().unwrap());
        let expected = multiset(sub.initial(&db, &QueryLimits::default()).unwrap());
        let missing: Vec<_> = expected.iter().filter(|(r, n)| got.get(*r) != Some(n)).take(3).collect();
        let extra: Vec<_> = got.iter().filter(|(r, n)| expected.get(*r) != Some(n)).take(3).collect();
        prop_assert!(missing.is_empty() && extra.is_empty(), "missing {:?}, extra {:?}", missing, extra);
    }
}

#[test]
fn queries_that_fit_a_slice_are_answered_at_once() {
    let (db, _, _) = db(500);
    let slice = QueryLimits { rows_max: 100, ..QueryLimits::default() };
    let limits = QueryLimits::default();
    let sub = Subscription::new(&db, "SELECT * FROM unit WHERE zone = 3").unwrap();
    let scan = InitialScan::start(&db, &sub, &slice, &limits).unwrap();
    assert!(scan.is_done(), "72 rows through the zone index");
    assert_eq!(scan.rows().unwrap().len(), sub.initial(&db, &limits).unwrap().len());
    let sub = Subscription::new(&db, "SELECT * FROM unit WHERE hp = 3").unwrap();
    assert!(
        !InitialScan::start(&db, &sub, &slice, &limits).unwrap().is_done(),
        "a scan of 500 goes in slices"
    );
}

//! Initial rows in slices: a scan that reads a bounded number of rows at a time while
//! ticks change the table in between ends with exactly the rows the query returns then.

mod common;

use common::multiset;
use proptest::prelude::*;
use tickdb_engine::{Database, EngineConfig, TableChanges, TableId};
use tickdb_sql::{InitialScan, QueryLimits, Subscription};
use tickdb_wasm_abi::{TableSchema, Value, ValueType};

fn db(rows: u32) -> (Database, TableId) {
    let mut db = Database::new(EngineConfig::default()).unwrap();
    let schema = TableSchema::builder("unit")
        .column("id", ValueType::U32)
        .column("zone", ValueType::U8)
        .column("hp", ValueType::I32)
        .primary_key(["id"])
        .btree_index(["zone"])
        .build()
        .unwrap();
    let t = db.create_table(schema).unwrap();
    let mut tx = db.begin();
    for id in 0..rows {
        tx.insert_values(t, &[Value::U32(id), Value::U8((id % 7) as u8), Value::I32(id as i32 % 11 - 5)])
            .unwrap();
    }
    tx.commit();
    (db, t)
}

#[derive(Debug, Clone)]
enum Op {
    Upsert { id: u32, zone: u8, hp: i32 },
    Delete { id: u32 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..900u32, 0..7u8, -6..6i32).prop_map(|(id, zone, hp)| Op::Upsert { id, zone, hp }),
        1 => (0..900u32).prop_map(|id| Op::Delete { id }),
    ]
}

fn tick(db: &mut Database, t: TableId, ops: &[Op]) -> Vec<TableChanges> {
    let mut tx = db.begin();
    for op in ops {
        match *op {
            Op::Upsert { id, zone, hp } => {
                let row = [Value::U32(id), Value::U8(zone), Value::I32(hp)];
                match tx.find_by_primary_key(t, &[Value::U32(id)]).unwrap() {
                    Some(existing) => tx.update_values(t, existing, &row).unwrap(),
                    None => {
                        tx.insert_values(t, &row).unwrap();
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
    tx.commit().table_changes(db)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 150, ..ProptestConfig::default() })]

    #[test]
    fn a_sliced_scan_ends_with_the_rows_of_its_last_tick(
        rows in 0..700u32,
        slice in 1..150u64,
        ticks in proptest::collection::vec(proptest::collection::vec(op(), 0..30), 40),
        query in 0..2usize,
    ) {
        let (mut db, t) = db(rows);
        let sql = ["SELECT * FROM unit WHERE hp > 0", "SELECT * FROM unit"][query];
        let sub = Subscription::new(&db, sql).unwrap();
        let mut scan = InitialScan::start(&db, &sub, &QueryLimits::default()).unwrap();
        let per_step = slice;
        let slice = QueryLimits { rows_max: per_step, ..QueryLimits::default() };
        let mut steps = 0;
        let mut ticks = ticks.iter().cycle();
        while !scan.step(&db, &slice) {
            steps += 1;
            let ops = ticks.next().unwrap();
            let changes = tick(&mut db, t, ops);
            scan.apply(&db, &changes);
        }
        prop_assert!(steps as u64 >= u64::from(rows) / per_step / 2, "{steps} steps");
        let got = multiset(scan.rows().unwrap());
        let expected = multiset(sub.initial(&db, &QueryLimits::default()).unwrap());
        let missing: Vec<_> = expected.keys().filter(|r| !got.contains_key(*r)).take(5).collect();
        let extra: Vec<_> = got.keys().filter(|r| !expected.contains_key(*r)).take(5).collect();
        prop_assert!(missing.is_empty() && extra.is_empty(), "missing {:?}, extra {:?}", missing, extra);
    }
}

#[test]
fn queries_through_an_index_are_answered_at_once() {
    let (db, _) = db(500);
    let limits = QueryLimits::default();
    let sub = Subscription::new(&db, "SELECT * FROM unit WHERE zone = 3").unwrap();
    let scan = InitialScan::start(&db, &sub, &limits).unwrap();
    assert!(scan.is_done());
    assert_eq!(scan.rows().unwrap().len(), sub.initial(&db, &limits).unwrap().len());
    let sub = Subscription::new(&db, "SELECT * FROM unit WHERE hp = 3").unwrap();
    assert!(!InitialScan::start(&db, &sub, &limits).unwrap().is_done(), "a scan goes in slices");
}

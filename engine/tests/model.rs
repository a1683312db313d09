//! Storage, indexes, transactions and changesets checked against a model.
//!
//! Random ticks of random transactions (inserts, updates, deletes with keys drawn from
//! small domains, so that unique violations and slot reuse are common) run against a
//! table and against a `BTreeMap` of rows. After every operation the table's rows, its
//! primary-key and unique lookups, and its btree point, prefix and range scans must
//! equal what the model says; after every commit and tick, the changeset must equal the
//! difference of the model before and after (tick changesets are built both by merging
//! transactions' changesets and by committing straight into them); after a rollback,
//! the state before.

use std::collections::BTreeMap;
use std::ops::Bound;

use proptest::prelude::*;
use tickdb_engine::{Changeset, Database, EngineConfig, Error, TableChanges, TableId, Tx};
use tickdb_wasm_abi::{ColId, TableSchema, Value, ValueType, decode_exact};

#[derive(Debug, Clone, PartialEq)]
struct Row {
    id: u64,
    /// Unindexed and at a fixed offset: its updates take rollback's fast path.
    hp: u32,
    name: String,
    zone: u32,
    x: f32,
}

impl Row {
    fn values(&self) -> Vec<Value> {
        vec![
            Value::U64(self.id),
            Value::U32(self.hp),
            Value::string(self.name.as_str()),
            Value::U32(self.zone),
            Value::F32(self.x),
        ]
    }
}

type Model = BTreeMap<u64, Row>;

#[derive(Debug, Clone)]
enum Op {
    Insert(Row),
    /// Replace the row with primary key `.0` by `.1` (whose id may differ).
    Update(u64, Row),
    /// Change only `hp` of the row with primary key `.0`.
    SetHp(u64, u32),
    Delete(u64),
}

const NAMES: [&str; 6] =
    ["ann", "bo", "", "a\0b", "a name long enough for the arena", "another long name, also in the arena"];

fn row() -> impl Strategy<Value = Row> {
    let x =
        prop_oneof![Just(0.0f32), Just(-0.0), Just(1.5), Just(-7.25), Just(f32::NAN), Just(f32::INFINITY)];
    (0u64..12, 0u32..3, 0..NAMES.len(), 0u32..3, x).prop_map(|(id, hp, n, zone, x)| Row {
        id,
        hp,
        name: NAMES[n].into(),
        zone,
        x,
    })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => row().prop_map(Op::Insert),
        2 => (0u64..12, row()).prop_map(|(id, r)| Op::Update(id, r)),
        2 => (0u64..12, 0u32..3).prop_map(|(id, hp)| Op::SetHp(id, hp)),
        1 => (0u64..12).prop_map(Op::Delete),
    ]
}

/// A tick: transactions, each committed (true) or rolled back.
fn ticks() -> impl Strategy<Value = Vec<Vec<(Vec<Op>, bool)>>> {
    let tx = (prop::collection::vec(op(), 0..12), prop::bool::weighted(0.7));
    prop::collection::vec(prop::collection::vec(tx, 1..4), 1..6)
}

fn schema() -> TableSchema {
    TableSchema::builder("thing")
        .column("id", ValueType::U64)
        .column("hp", ValueType::U32)
        .column("name", ValueType::String)
        .column("zone", ValueType::U32)
        .column("x", ValueType::F32)
        .primary_key(["id"])
        .unique(["name"])
        .btree_index(["zone", "x"])
        .build()
        .unwrap()
}

fn decode_row(bytes: &[u8]) -> Vec<Value> {
    let ty = ValueType::Product(tickdb_wasm_abi::ProductType::new(
        schema().columns.iter().map(|c| (c.name.clone(), c.ty.clone())),
    ));
    match decode_exact(&ty, bytes).unwrap() {
        Value::Product(v) => v,
        _ => unreachable!(),
    }
}

/// Applies one op to the model, returning whether it should succeed.
fn apply_model(model: &mut Model, op: &Op) -> bool {
    let clash = |model: &Model, r: &Row, except: Option<u64>| {
        model.values().any(|o| Some(o.id) != except && (o.id == r.id || o.name == r.name))
    };
    match op {
        Op::Insert(r) => !clash(model, r, None) && model.insert(r.id, r.clone()).is_none(),
        Op::Update(id, r) => {
            if !model.contains_key(id) || clash(model, r, Some(*id)) {
                return false;
            }
            model.remove(id);
            model.insert(r.id, r.clone());
            true
        }
        Op::SetHp(id, hp) => model.get_mut(id).map(|r| r.hp = *hp).is_some(),
        Op::Delete(id) => model.remove(id).is_some(),
    }
}

fn apply_table(tx: &mut Tx<'_>, t: TableId, op: &Op) -> Result<(), Error> {
    match op {
        Op::Insert(r) => tx.insert_values(t, &r.values()).map(drop),
        Op::Update(id, r) => match tx.find_by_primary_key(t, &[Value::U64(*id)])? {
            Some(row) => tx.update_values(t, row, &r.values()),
            None => Err(Error::NoSuchRow { table: "thing".into(), row: 0 }),
        },
        Op::SetHp(id, hp) => match tx.find_by_primary_key(t, &[Value::U64(*id)])? {
            Some(row) => {
                let mut values = tx.table(t).get(row).unwrap().to_values();
                values[1] = Value::U32(*hp);
                tx.update_values(t, row, &values)
            }
            None => Err(Error::NoSuchRow { table: "thing".into(), row: 0 }),
        },
        Op::Delete(id) => match tx.find_by_primary_key(t, &[Value::U64(*id)])? {
            Some(row) => tx.delete(t, row),
            None => Err(Error::NoSuchRow { table: "thing".into(), row: 0 }),
        },
    }
}

fn sorted(mut rows: Vec<Vec<Value>>) -> Vec<Vec<Value>> {
    rows.sort();
    rows
}

/// Compares every read path of the table with the model.
fn check_reads(tx: &Tx<'_>, t: TableId, model: &Model) -> Result<(), TestCaseError> {
    let table = tx.table(t);
    let want: Vec<Vec<Value>> = model.values().map(Row::values).collect();
    prop_assert_eq!(table.len(), model.len());
    prop_assert_eq!(sorted(table.iter().map(|r| r.to_values()).collect()), sorted(want.clone()));
    let by_rows = |ids: Vec<tickdb_engine::RowId>| {
        sorted(ids.into_iter().map(|r| table.get(r).unwrap().to_values()).collect())
    };
    for id in 0..12u64 {
        let found = tx.find_by_primary_key(t, &[Value::U64(id)]).unwrap();
        prop_assert_eq!(found.map(|r| table.get(r).unwrap().to_values()), model.get(&id).map(Row::values));
    }
    let name_key = table.unique_constraint("thing_name_key").unwrap();
    for name in NAMES {
        let key = table.key_from_values(&[ColId(2)], &[Value::string(name)]).unwrap();
        let found = table.find_unique(name_key, &key).map(|r| table.get(r).unwrap().to_values());
        prop_assert_eq!(found, model.values().find(|r| r.name == name).map(Row::values));
    }
    let index = table.btree_index("thing_zone_x_idx").unwrap();
    let cols = [ColId(3), ColId(4)];
    for zone in 0..3u32 {
        let prefix = table.key_from_values(&cols, &[Value::U32(zone)]).unwrap();
        let got = by_rows(table.index_prefix(index, &prefix).collect());
        let want: Vec<_> = model.values().filter(|r| r.zone == zone).map(Row::values).collect();
        prop_assert_eq!(got, sorted(want));
        // (zone, x) > (zone, -0.0) and <= (zone + 1): positive x and NaN in this zone, all of the next.
        let lower = table.key_from_values(&cols, &[Value::U32(zone), Value::F32(-0.0)]).unwrap();
        let upper = table.key_from_values(&cols, &[Value::U32(zone + 1)]).unwrap();
        let got =
            by_rows(table.index_range(index, Bound::Excluded(&lower), Bound::Included(&upper)).collect());
        let want: Vec<_> = model
            .values()
            .filter(|r| (r.zone == zone && Value::F32(r.x) > Value::F32(-0.0)) || r.zone == zone + 1)
            .map(Row::values)
            .collect();
        prop_assert_eq!(got, sorted(want));
    }
    Ok(())
}

type Rows = Vec<Vec<Value>>;
type Updates = Vec<(Vec<Value>, Vec<Value>)>;

/// The changes a changeset must report, from two model states: inserts, deletes, updates.
fn expected_changes(before: &Model, after: &Model) -> (Rows, Rows, Updates) {
    let mut inserts = Vec::new();
    let mut deletes = Vec::new();
    let mut updates = Vec::new();
    for (id, row) in after {
        match before.get(id) {
            None => inserts.push(row.values()),
            Some(old) if old.values() != row.values() => updates.push((old.values(), row.values())),
            Some(_) => {}
        }
    }
    for (id, row) in before {
        if !after.contains_key(id) {
            deletes.push(row.values());
        }
    }
    updates.sort();
    (sorted(inserts), sorted(deletes), updates)
}

fn check_changes(
    db: &Database,
    changeset: &Changeset,
    before: &Model,
    after: &Model,
) -> Result<(), TestCaseError> {
    let changes: Vec<TableChanges> = changeset.table_changes(db);
    let (want_ins, want_del, want_upd) = expected_changes(before, after);
    let empty = TableChanges::default();
    let got = changes.first().unwrap_or(&empty);
    prop_assert!(changes.len() <= 1);
    prop_assert_eq!(sorted(got.inserts.iter().map(decode_row).collect()), want_ins);
    prop_assert_eq!(sorted(got.deletes.iter().map(decode_row).collect()), want_del);
    let mut updates: Vec<_> = got.updates().map(|(o, n)| (decode_row(o), decode_row(n))).collect();
    updates.sort();
    prop_assert_eq!(updates, want_upd);
    let values = |m: &Model| m.values().map(Row::values).collect::<Vec<_>>();
    prop_assert_eq!(changes.is_empty(), values(before) == values(after));
    if changeset.is_empty() {
        prop_assert!(changes.is_empty());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// The table, its indexes and its changesets behave like the model through random
    /// ticks of committed and rolled-back transactions.
    #[test]
    fn table_matches_model(ticks in ticks()) {
        let mut db = Database::new(EngineConfig::default()).unwrap();
        let t = db.create_table(schema()).unwrap();
        let mut committed = Model::new();
        for tick in ticks {
            let tick_start = committed.clone();
            let mut tick_changes = Changeset::default();
            for (n, (ops, commit)) in tick.into_iter().enumerate() {
                let mut working = committed.clone();
                let mut tx = db.begin();
                for op in &ops {
                    let ok = apply_model(&mut working, op);
                    let result = apply_table(&mut tx, t, op);
                    prop_assert_eq!(result.is_ok(), ok, "op {:?} gave {:?}", op, result);
                    if let Err(Error::UniqueViolation { constraint, .. }) = &result {
                        prop_assert!(constraint == "thing_pkey" || constraint == "thing_name_key");
                    }
                    check_reads(&tx, t, &working)?;
                }
                if commit && n % 2 == 0 {
                    // Every other transaction commits on its own, checked, then merges...
                    let changeset = tx.commit();
                    check_changes(&db, &changeset, &committed, &working)?;
                    tick_changes.merge(changeset);
                    committed = working;
                } else if commit {
                    // ...and the others fold straight into the tick, as the tick loop does.
                    tx.commit_into(&mut tick_changes);
                    committed = working;
                } else {
                    tx.rollback();
                }
                check_reads(&db.begin(), t, &committed)?;
            }
            check_changes(&db, &tick_changes, &tick_start, &committed)?;
        }
    }
}

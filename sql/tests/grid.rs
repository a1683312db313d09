//! Grid indexes: a window query reads the cells the window covers and returns exactly
//! the rows a scan would, as rows are inserted, moved, deleted and rolled back.

use std::sync::Arc;

use proptest::prelude::*;
use tickdb_engine::{Database, EngineConfig, HostConfig, ModuleHost, ModuleSystem, TableId};
use tickdb_sql::{Access, QueryLimits, query};
use tickdb_wasm_abi::{Identity, IndexKind, TableSchema, Value, ValueType};

/// `entity(id pk, x f32, y f32, z i64)` with a grid over (x, y), cells 8 wide, or one
/// over (x, y, z), cells 2 wide, or both.
fn db(flat: bool, volume: bool) -> (Database, TableId) {
    let mut db = Database::new(EngineConfig::default()).unwrap();
    let mut schema = TableSchema::builder("entity")
        .column("id", ValueType::U32)
        .column("x", ValueType::F32)
        .column("y", ValueType::F32)
        .column("z", ValueType::I64)
        .primary_key(["id"]);
    if flat {
        schema = schema.grid_index(["x", "y"], 3);
    }
    if volume {
        schema = schema.named_grid_index("volume", ["x", "y", "z"], 1);
    }
    let schema = schema.build().unwrap();
    let t = db.create_table(schema).unwrap();
    (db, t)
}

#[derive(Debug, Clone)]
enum Op {
    Put { id: u32, x: f32, y: f32, z: i64 },
    Delete { id: u32 },
}

fn coordinate() -> impl Strategy<Value = f32> {
    prop_oneof![
        8 => -40.0..40.0f32,
        1 => Just(0.0f32),
        1 => Just(-0.0f32),
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => (-5i32..5).prop_map(|v| v as f32 * 8.0),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..60u32, coordinate(), coordinate(), -6..6i64).prop_map(|(id, x, y, z)| Op::Put { id, x, y, z }),
        1 => (0..60u32).prop_map(|id| Op::Delete { id }),
    ]
}

fn apply(db: &mut Database, t: TableId, ops: &[Op], commit: bool) {
    let mut tx = db.begin();
    for op in ops {
        match *op {
            Op::Put { id, x, y, z } => {
                let row = [Value::U32(id), Value::F32(x), Value::F32(y), Value::I64(z)];
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
    if commit {
        tx.commit();
    } else {
        tx.rollback();
    }
}

fn ids(db: &Database, sql: &str) -> (Access, Vec<u32>) {
    let result = query(db, sql, &QueryLimits::default()).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut ids: Vec<u32> = result
        .rows
        .iter()
        .map(|r| match r[0] {
            Value::U32(id) => id,
            ref other => panic!("{other}"),
        })
        .collect();
    ids.sort();
    (result.plan.first, ids)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn window_queries_through_the_grid_return_what_a_scan_returns(
        ticks in proptest::collection::vec((proptest::collection::vec(op(), 0..30), any::<bool>()), 1..6),
        windows in proptest::collection::vec((-50.0..50.0f32, 0.0..30.0f32, -50.0..50.0f32, 0.0..30.0f32, -6..6i64), 1..8),
        volume in any::<bool>(),
    ) {
        let (mut db, t) = db(!volume, volume);
        for (ops, commit) in &ticks {
            apply(&mut db, t, ops, *commit);
        }
        for &(x, w, y, h, z) in &windows {
            let (x1, y1) = (x + w, y + h);
            let zs = format!("z BETWEEN {z} AND {}", z + 3);
            let conditions = [
                format!("x BETWEEN {x} AND {x1} AND y BETWEEN {y} AND {y1} AND {zs}"),
                format!("x >= {x} AND x < {x1} AND y > {y} AND y <= {y1} AND z >= {z} AND z < {}", z + 2),
                format!("x = {} AND y BETWEEN {y} AND {y1} AND z = {z}", x.round() * 8.0),
            ];
            for condition in &conditions {
                let (plan, got) = ids(&db, &format!("SELECT id FROM entity WHERE {condition}"));
                prop_assert!(matches!(plan, Access::Grid { .. }), "{condition}: {plan:?}");
                // The same condition, which no index can serve, read by a scan.
                let (plan, scanned) = ids(&db, &format!("SELECT id FROM entity WHERE ({condition}) OR FALSE"));
                prop_assert_eq!(plan, Access::Scan);
                prop_assert_eq!(got, scanned, "{}", condition);
            }
        }
    }
}

#[test]
fn the_fewest_cells_win_and_wide_windows_scan() {
    let (both, _) = db(true, true);
    let (plan, _) =
        ids(&both, "SELECT id FROM entity WHERE x BETWEEN 0 AND 7 AND y BETWEEN 0 AND 7 AND z = 1");
    let cells = |plan: Access| match plan {
        Access::Grid { index, cells, .. } => (index, cells),
        other => panic!("{other:?}"),
    };
    assert_eq!(cells(plan), (0, vec![(0, 0), (0, 0)]), "one 8-wide cell, not 16 2-wide");
    let (volume, _) = db(false, true);
    let (plan, _) =
        ids(&volume, "SELECT id FROM entity WHERE x BETWEEN 0 AND 3 AND y BETWEEN -2 AND -1 AND z = 5");
    assert_eq!(cells(plan), (0, vec![(0, 1), (-1, -1), (2, 2)]));
    let (plan, _) =
        ids(&both, "SELECT id FROM entity WHERE x BETWEEN 0 AND 1000000 AND y BETWEEN 0 AND 1000000");
    assert_eq!(plan, Access::Scan, "a window past the cell limit");
    let (plan, _) = ids(&both, "SELECT id FROM entity WHERE x > 0 AND y BETWEEN 0 AND 1");
    assert_eq!(plan, Access::Scan, "a side without a bound");
    // An empty side reads nothing, however wide the other; bounds past every cell
    // neither overflow nor read the grid.
    let (_, rows) = ids(&both, "SELECT id FROM entity WHERE x BETWEEN 1000 AND 0 AND y BETWEEN 0 AND 1e15");
    assert!(rows.is_empty());
    let (plan, _) =
        ids(&both, "SELECT id FROM entity WHERE x BETWEEN 0 AND 1e300 AND y BETWEEN -1e300 AND 0");
    assert_eq!(plan, Access::Scan);
}

#[test]
fn grids_are_declared_by_modules_and_checked() {
    let host = ModuleHost::new(HostConfig::default()).unwrap();
    let module = host.load(&tickdb_test_modules::wasm("tickdb-test-features")).unwrap();
    let mut db = Database::new(EngineConfig::default()).unwrap();
    let _system = ModuleSystem::new(&host, Arc::clone(&module), &mut db, Identity::default()).unwrap();
    let marker = db.table(db.table_id("marker").unwrap()).schema().clone();
    assert_eq!(marker.indexes[0].kind, IndexKind::Grid { cell_log2: 4 });
    for (builder, says) in [
        (TableSchema::builder("t").column("a", ValueType::F32).grid_index(["a"], 0), "2 or 3"),
        (
            TableSchema::builder("t")
                .column("a", ValueType::F32)
                .column("b", ValueType::String)
                .grid_index(["a", "b"], 0),
            "column `b`",
        ),
        (
            TableSchema::builder("t")
                .column("a", ValueType::F32)
                .column("b", ValueType::F32)
                .grid_index(["a", "b"], 60),
            "2^60",
        ),
    ] {
        let e = builder.build().unwrap_err();
        assert!(e.to_string().contains(says), "{e}");
    }
}

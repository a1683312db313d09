//! A schema migration on the tick thread: the time a republish that adds a column
//! (with its default) and an index to a 1M-row table holds the tick thread, split
//! into planning, rebuilding the table, and capturing the snapshot the migration
//! writes. Three rounds, each on a fresh database; the median is reported.
//!
//! Run with `cargo bench -p tickdb-benches --bench migrate`.

use std::time::{Duration, Instant};

use tickdb_benches::{EncodedRows, loaded_db, player_schema, players};
use tickdb_engine::Migration;
use tickdb_wasm_abi::{ColumnSchema, IndexKind, IndexSchema, ModuleDef, TableSchema, ValueType};

const ROWS: usize = 1_000_000;

/// The player table with a `level` column (default 1) and an index on `hp` added.
fn next_schema() -> TableSchema {
    let mut next = player_schema();
    let level =
        ColumnSchema { name: "level".into(), ty: ValueType::U32, default: Some(1u32.to_le_bytes().to_vec()) };
    next.columns.push(level);
    let hp = next.column("hp").unwrap();
    next.indexes.push(IndexSchema {
        name: "player_hp_idx".into(),
        columns: vec![hp],
        kind: IndexKind::BTree,
    });
    next.validate().unwrap();
    next
}

fn main() {
    let rows = EncodedRows::of(&players(ROWS));
    let def = ModuleDef { tables: vec![next_schema()], ..ModuleDef::default() };
    let mut rounds: Vec<[Duration; 3]> = Vec::new();
    for _ in 0..3 {
        let (mut db, _) = loaded_db(&rows);
        let started = Instant::now();
        let migration = Migration::plan(&db, &def).unwrap();
        let planned = started.elapsed();
        let started = Instant::now();
        migration.apply(&mut db).unwrap();
        let applied = started.elapsed();
        let started = Instant::now();
        let (_, snapshot) = tickdb_engine::snapshot::capture(&db);
        let captured = started.elapsed();
        assert!(snapshot.len() > ROWS * 64);
        rounds.push([planned, applied, captured]);
    }
    rounds.sort_by_key(|r| r[1]);
    let [planned, applied, captured] = rounds[1];
    println!(
        "migrate: {ROWS} rows, a column with a default and an index added: plan {planned:.1?}, \
         rebuild {applied:.1?}, snapshot capture {captured:.1?} (median of 3 by rebuild)"
    );
}

//! A plain loop over one write path, for profilers: `perf record`, or
//! `valgrind --tool=callgrind` to count instructions per row (repeatable on a noisy
//! machine). Criterion's harness runs setup for every group, which clutters a profile.
//!
//! `cargo run --release -p tickdb-benches --example write_paths -- [rows] [insert|update|rollback]`

use std::time::Instant;

use tickdb_benches::{EncodedRows, X_OFFSET, empty_db, loaded_db, mix, mixed_writes, players};

fn main() {
    let rows_n: usize = std::env::args().nth(1).map(|s| s.parse().expect("a row count")).unwrap_or(1_000_000);
    let mode = std::env::args().nth(2).unwrap_or_else(|| "insert".into());
    let rows = EncodedRows::of(&players(rows_n));
    match mode.as_str() {
        "insert" => insert(&rows),
        "update" => update(&rows, rows_n),
        "rollback" => rollback(&rows, rows_n),
        other => eprintln!("unknown mode {other}: use insert, update or rollback"),
    }
}

fn insert(rows: &EncodedRows) {
    let (mut db, t) = empty_db();
    let mut tx = db.begin();
    let start = Instant::now();
    for row in rows.iter() {
        tx.insert(t, row).expect("valid row");
    }
    println!("insert: {:?}", start.elapsed());
    let start = Instant::now();
    drop(tx.commit());
    println!("commit: {:?}", start.elapsed());
}

/// Updates `x` of a tenth of the rows, chosen at random, then rolls back.
fn update(rows: &EncodedRows, rows_n: usize) {
    let (mut db, t) = loaded_db(rows);
    let pk = db.table(t).schema().primary_key.expect("player has a primary key");
    let ids: Vec<u64> = (0..rows_n as u64 / 10).map(|i| mix(i) % rows_n as u64 + 1).collect();
    let mut tx = db.begin();
    let mut row = Vec::new();
    let start = Instant::now();
    for &id in &ids {
        let rid = tx.table(t).find_unique_encoded(pk, &id.to_le_bytes()).expect("a u64 key").expect("a row");
        row.clear();
        tx.table(t).get(rid).expect("live").encode_into(&mut row);
        row[X_OFFSET..X_OFFSET + 4].copy_from_slice(&(id as f32).to_le_bytes());
        tx.update(t, rid, &row).expect("valid row");
    }
    println!("update: {:?}", start.elapsed());
    let start = Instant::now();
    tx.rollback();
    println!("rollback: {:?}", start.elapsed());
}

/// Rolls back 100 transactions of 1,000 writes each: 400 updates, 300 deletes and 300
/// inserts, the mix of the rollback benchmark.
fn rollback(rows: &EncodedRows, rows_n: usize) {
    let (mut db, t) = loaded_db(rows);
    let new_rows = EncodedRows::of(&players(rows_n + 1000)[rows_n..]);
    let mut total = std::time::Duration::ZERO;
    for round in 0..100u64 {
        let mut tx = db.begin();
        mixed_writes(&mut tx, t, &new_rows, rows_n, round);
        let start = Instant::now();
        tx.rollback();
        total += start.elapsed();
    }
    println!("rollback of 1,000 writes: {:?} on average", total / 100);
}

//! SQL in-process: a one-off point query through the primary key, end to end (parse,
//! bind, plan, run, result values), against 100,000 players; and a btree point query.
//!
//! Run with `cargo bench -p tickdb-benches --bench sql`.

use std::time::Instant;

use hdrhistogram::Histogram;
use tickdb_engine::{Database, EngineConfig};
use tickdb_sql::{QueryLimits, query};
use tickdb_wasm_abi::{Identity, TableSchema, Value, ValueType};

const ROWS: u64 = 100_000;
const BATCH: u64 = 200;

fn main() {
    let mut db = Database::new(EngineConfig::default()).expect("db");
    let schema = TableSchema::builder("player")
        .column("id", ValueType::U64)
        .column("identity", ValueType::Identity)
        .column("zone", ValueType::U32)
        .column("x", ValueType::F32)
        .column("y", ValueType::F32)
        .column("name", ValueType::String)
        .primary_key(["id"])
        .btree_index(["zone"])
        .build()
        .expect("schema");
    let t = db.create_table(schema).expect("table");
    let mut tx = db.begin();
    for i in 0..ROWS {
        let mut identity = [0u8; 32];
        identity[..8].copy_from_slice(&i.to_le_bytes());
        let row = [
            Value::U64(i),
            Value::Identity(Identity(identity)),
            Value::U32((i % 10_000) as u32),
            Value::F32(i as f32),
            Value::F32(0.0),
            Value::string(format!("player{i}")),
        ];
        tx.insert_values(t, &row).expect("insert");
    }
    tx.commit();
    let limits = QueryLimits::default();
    println!("| query | batches of {BATCH} | µs p50 | µs p90 | µs p99 |");
    println!("|---|---|---|---|---|");
    for (name, make) in [
        (
            "point, primary key",
            (|i: u64| format!("SELECT * FROM player WHERE id = {}", i * 7919 % ROWS)) as fn(u64) -> String,
        ),
        ("point, btree (10 rows)", |i: u64| format!("SELECT name FROM player WHERE zone = {}", i % 10_000)),
    ] {
        let queries: Vec<String> = (0..BATCH * 100).map(make).collect();
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
        for (n, batch) in queries.chunks(BATCH as usize).enumerate() {
            let started = Instant::now();
            for sql in batch {
                let r = query(&db, sql, &limits).expect("query");
                assert!(!r.rows.is_empty());
            }
            if n >= 10 {
                h.saturating_record(started.elapsed().as_nanos() as u64 / BATCH);
            }
        }
        let q = |q| h.value_at_quantile(q) as f64 / 1000.0;
        println!("| {name} | {} | {:.2} | {:.2} | {:.2} |", h.len(), q(0.5), q(0.9), q(0.99));
    }
}

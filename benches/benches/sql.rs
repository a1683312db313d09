//! SQL in-process: a one-off point query through the primary key, end to end (parse,
//! bind, plan, run, result values), against 100,000 players; a btree point query; each
//! parsed every time and through the statement cache; and
//! the deltas of 10,000 `zone = ?` subscriptions for a tick that updates 10,000 players.
//!
//! Run with `cargo bench -p tickdb-benches --bench sql`.

use std::time::Instant;

use hdrhistogram::Histogram;
use tickdb_engine::{Database, EngineConfig};
use tickdb_sql::{QueryLimits, StatementCache, SubscriptionSet, query};
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
    let cache = StatementCache::default();
    let point = |i: u64| format!("SELECT * FROM player WHERE id = {}", i * 7919 % ROWS);
    let btree = |i: u64| format!("SELECT name FROM player WHERE zone = {}", i % 10_000);
    for (name, make, cached) in [
        ("point, primary key", &point as &dyn Fn(u64) -> String, false),
        ("point, primary key, statement cache", &point, true),
        ("point, btree (10 rows)", &btree, false),
        ("point, btree (10 rows), statement cache", &btree, true),
    ] {
        let queries: Vec<String> = (0..BATCH * 100).map(make).collect();
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
        for (n, batch) in queries.chunks(BATCH as usize).enumerate() {
            let started = Instant::now();
            for sql in batch {
                let r = if cached { cache.query(&db, sql, &limits) } else { query(&db, sql, &limits) };
                let r = r.expect("query");
                assert!(!r.rows.is_empty());
            }
            if n >= 10 {
                h.saturating_record(started.elapsed().as_nanos() as u64 / BATCH);
            }
        }
        let q = |q| h.value_at_quantile(q) as f64 / 1000.0;
        println!("| {name} | {} | {:.2} | {:.2} | {:.2} |", h.len(), q(0.5), q(0.9), q(0.99));
    }
    subscriptions(&mut db, t);
}

/// 10,000 subscriptions `SELECT * FROM player WHERE zone = ?` over 10,000 zones, and
/// ticks that each update 10,000 players (a tenth of them change zone): the time to
/// compute every subscription's delta from the tick's changes.
fn subscriptions(db: &mut Database, t: tickdb_engine::TableId) {
    let mut set = SubscriptionSet::default();
    for zone in 0..10_000 {
        set.subscribe(db, &format!("SELECT * FROM player WHERE zone = {zone}")).expect("subscribe");
    }
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let mut changed_queries = 0;
    for round in 0..30u64 {
        let mut tx = db.begin();
        for k in 0..10_000u64 {
            let id = (round * 10_000 + k * 7) % ROWS;
            let found = tx.find_by_primary_key(t, &[Value::U64(id)]).expect("key").expect("row");
            let mut values = tx.table(t).get(found).expect("live").to_values();
            values[3] = Value::F32(round as f32);
            if k % 10 == 0 {
                values[2] = Value::U32(((id + round) % 10_000) as u32);
            }
            tx.update_values(t, found, &values).expect("update");
        }
        let changes = tx.commit().table_changes(db);
        let started = Instant::now();
        let deltas = set.evaluate(db, &changes);
        let elapsed = started.elapsed();
        changed_queries = deltas.len();
        if round >= 5 {
            h.saturating_record(elapsed.as_micros() as u64);
        }
    }
    println!("\n| subscriptions | tick | ticks | ms p50 | ms p90 | ms p99 | queries with a delta |");
    println!("|---|---|---|---|---|---|---|");
    let q = |q| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "| 10,000 `zone = ?` | 10,000 players updated | {} | {:.2} | {:.2} | {:.2} | {changed_queries} |",
        h.len(),
        q(0.5),
        q(0.9),
        q(0.99)
    );
}

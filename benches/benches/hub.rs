//! A database's subscription hub on its own, as the tick thread runs it after each
//! tick: 10,000 clients, each subscribed to one of 100 zones of a 1,000-row table,
//! and ticks that move every row. Measured: the time to turn a tick's changes into
//! every client's update (evaluating the 100 distinct queries, grouping clients by
//! the queries they hold, encoding each distinct message once), p50 and p99 over
//! 300 ticks, and the allocations it makes.
//!
//! Run with `cargo bench -p tickdb-benches --bench hub`.

use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::time::Instant;

use hdrhistogram::Histogram;
use tickdb_benches::{ALLOCATIONS, Counting};
use tickdb_engine::{Database, EngineConfig, TickId, TickOutput};
use tickdb_net::hub::{Gate, Hub, HubConfig, Routes};
use tickdb_sql::{Reader, Visibility};
use tickdb_wasm_abi::{ConnectionId, Identity, TableSchema, Timestamp, Value, ValueType};

const CLIENTS: u64 = 10_000;
const ZONES: u64 = 100;
const ROWS: u64 = 1_000;
const TICKS: u64 = 300;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn main() {
    let mut db = Database::new(EngineConfig::default()).unwrap();
    let schema = TableSchema::builder("mover")
        .column("id", ValueType::U64)
        .column("zone", ValueType::U32)
        .column("x", ValueType::F32)
        .column("y", ValueType::F32)
        .primary_key(["id"])
        .btree_index(["zone"])
        .public()
        .build()
        .unwrap();
    let table = db.create_table(schema).unwrap();
    let mut tx = db.begin();
    for id in 0..ROWS {
        let row = [Value::U64(id), Value::U32((id % ZONES) as u32), Value::F32(0.0), Value::F32(0.0)];
        tx.insert_values(table, &row).unwrap();
    }
    tx.commit();

    let poll = mio::Poll::new().unwrap();
    let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
    let (to_loop, from_hub) = mpsc::channel();
    let gate = Gate::new("bench".into(), 1, Routes::new(vec![(to_loop, waker)]));
    let visibility = Visibility::new(&db, &[] as &[&str]).unwrap();
    let config = HubConfig {
        limits: Default::default(),
        slice: Default::default(),
        query_sets_max: 16,
        queries_per_set_max: 16,
        history_bytes_max: 0,
        history_ticks_max: 0,
        start_tick: 0,
        epoch: 1,
    };
    let mut hub = Hub::new(visibility, gate, config);
    for client in 1..=CLIENTS {
        let mut id = [0; 32];
        id[..8].copy_from_slice(&client.to_le_bytes());
        let mut connection = [0; 16];
        connection[..8].copy_from_slice(&client.to_le_bytes());
        hub.connect(client, ConnectionId(connection), Reader::client(Identity(id)));
        let query = format!("SELECT * FROM mover WHERE zone = {}", client % ZONES);
        hub.subscribe(&db, client, 1, &[query], (0, 0));
    }
    assert_eq!(from_hub.try_iter().count() as u64, CLIENTS, "every client got its rows");

    let mut times = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let mut allocations = Histogram::<u64>::new_with_bounds(1, 100_000_000, 3).unwrap();
    for tick in 1..=TICKS {
        let mut tx = db.begin();
        for id in 0..ROWS {
            let row =
                [Value::U64(id), Value::U32((id % ZONES) as u32), Value::F32(tick as f32), Value::F32(0.0)];
            let found = tx.find_by_primary_key(table, &[Value::U64(id)]).unwrap().unwrap();
            tx.update_values(table, found, &row).unwrap();
        }
        let changes = tx.commit().table_changes(&db);
        let output = TickOutput {
            tick: TickId(tick),
            timestamp: Timestamp::from_micros(tick as i64 * 50_000),
            changes,
            committed: 1,
            rolled_back: 0,
            log: None,
        };
        let (before, started) = (ALLOCATIONS.load(Ordering::Relaxed), Instant::now());
        let out = hub.after_tick(&db, &output);
        let elapsed = started.elapsed();
        allocations.saturating_record(ALLOCATIONS.load(Ordering::Relaxed) - before);
        times.saturating_record(elapsed.as_micros() as u64);
        assert_eq!(out.len() as u64, CLIENTS, "every client gets its update");
        drop(out);
    }
    println!(
        "hub: {CLIENTS} clients over {ZONES} zone queries, {ROWS} rows moving per tick: \
         updates built in p50 {} µs, p99 {} µs; {} allocations per tick (p50)",
        times.value_at_quantile(0.5),
        times.value_at_quantile(0.99),
        allocations.value_at_quantile(0.5),
    );
}

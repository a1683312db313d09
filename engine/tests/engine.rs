//! Behaviour of the engine at its edges: constraint errors, sequences, every limit,
//! malformed rows, arena compaction, column scans, memory use, and the tick loop.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, mpsc};

use tickdb_engine::{
    Clock, Database, EngineConfig, Error, InboxError, ReadError, SplitMix64, TableChanges, TableId,
    TickContext, TickLoop, TickOutput, TickSystem, Ticker, Tx,
};
use tickdb_wasm_abi::{ColId, Identity, TableSchema, Timestamp, Value, ValueType};

fn player_schema() -> TableSchema {
    TableSchema::builder("player")
        .column("id", ValueType::U64)
        .column("owner", ValueType::Identity)
        .column("x", ValueType::F32)
        .column("y", ValueType::F32)
        .column("hp", ValueType::U32)
        .column("name", ValueType::String)
        .primary_key(["id"])
        .auto_inc("id")
        .unique(["owner"])
        .build()
        .unwrap()
}

fn player(id: u64, owner: u8, name: &str) -> Vec<Value> {
    let mut identity = [0; 32];
    identity[0] = owner;
    vec![
        Value::U64(id),
        Value::Identity(Identity(identity)),
        Value::F32(owner as f32),
        Value::F32(0.5),
        Value::U32(100),
        Value::string(name),
    ]
}

fn db_with(config: EngineConfig) -> (Database, TableId) {
    let mut db = Database::new(config).unwrap();
    let t = db.create_table(player_schema()).unwrap();
    (db, t)
}

fn all_rows(db: &Database, t: TableId) -> Vec<Vec<Value>> {
    let mut rows: Vec<_> = db.table(t).iter().map(|r| r.to_values()).collect();
    rows.sort();
    rows
}

/// A duplicate key is an error naming the constraint, the columns and the value, and
/// the failed insert leaves no trace; the transaction's earlier writes stay until the
/// caller rolls back, which then restores the state before the transaction.
#[test]
fn unique_violation_names_constraint_and_rolls_back() {
    let (mut db, t) = db_with(EngineConfig::default());
    let mut tx = db.begin();
    tx.insert_values(t, &player(1, 1, "ann")).unwrap();
    tx.commit();
    let before = all_rows(&db, t);

    let mut tx = db.begin();
    tx.insert_values(t, &player(2, 2, "bo")).unwrap();
    let err = tx.insert_values(t, &player(3, 1, "cy")).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::UniqueViolation { .. }));
    let owner = format!("0x01{}", "00".repeat(31));
    assert_eq!(
        message,
        format!("duplicate key player(owner)=({owner}) violates unique constraint `player_owner_key`")
    );
    assert_eq!(tx.table(t).len(), 2, "the failed insert left no row");
    tx.rollback();
    assert_eq!(all_rows(&db, t), before);
}

/// Zero in an auto-inc column takes the next value; explicit values move the sequence
/// past them; rollback puts the sequence back; an exhausted sequence is an error.
#[test]
fn auto_inc_sequences() {
    let (mut db, t) = db_with(EngineConfig::default());
    let mut tx = db.begin();
    let a = tx.insert_values(t, &player(0, 1, "a")).unwrap();
    let b = tx.insert_values(t, &player(10, 2, "b")).unwrap();
    let c = tx.insert_values(t, &player(0, 3, "c")).unwrap();
    let ids: Vec<Value> = [a, b, c].iter().map(|&r| tx.table(t).get(r).unwrap().value(ColId(0))).collect();
    assert_eq!(ids, vec![Value::U64(1), Value::U64(10), Value::U64(11)]);
    tx.commit();

    let mut tx = db.begin();
    tx.insert_values(t, &player(0, 4, "d")).unwrap();
    tx.rollback();
    let mut tx = db.begin();
    let d = tx.insert_values(t, &player(0, 4, "d")).unwrap();
    assert_eq!(tx.table(t).get(d).unwrap().value(ColId(0)), Value::U64(12), "rollback restored the sequence");
    tx.commit();

    let schema = TableSchema::builder("small").column("n", ValueType::U8).auto_inc("n").build().unwrap();
    let small = db.create_table(schema).unwrap();
    let mut tx = db.begin();
    for _ in 0..255 {
        tx.insert_values(small, &[Value::U8(0)]).unwrap();
    }
    let err = tx.insert_values(small, &[Value::U8(0)]).unwrap_err();
    assert!(matches!(err, Error::SequenceExhausted { .. }), "{err}");
    assert!(err.to_string().contains("`n`"));
}

/// Rows over the size limit and inserts past the row limit fail cleanly.
#[test]
fn row_and_table_limits() {
    let config = EngineConfig { row_bytes_max: 128, table_rows_max: 3, ..EngineConfig::default() };
    let (mut db, t) = db_with(config);
    let mut tx = db.begin();
    let err = tx.insert_values(t, &player(0, 1, &"x".repeat(200))).unwrap_err();
    assert!(matches!(err, Error::RowTooLarge { len: 256, max: 128, .. }), "{err}");
    for i in 0..3 {
        tx.insert_values(t, &player(0, i, "p")).unwrap();
    }
    let err = tx.insert_values(t, &player(0, 9, "p")).unwrap_err();
    assert!(matches!(err, Error::TableFull { max: 3, .. }), "{err}");
    assert_eq!(tx.table(t).len(), 3);
}

/// Malformed row bytes get an error naming the column, and change nothing.
#[test]
fn malformed_rows_are_rejected() {
    let (mut db, t) = db_with(EngineConfig::default());
    let mut tx = db.begin();
    let mut row = Vec::new();
    tickdb_wasm_abi::encode_product(player_schema().column_types(), &player(1, 1, "ann"), &mut row).unwrap();
    let mut bad_utf8 = row.clone();
    *bad_utf8.last_mut().unwrap() = 0xFF;
    let err = tx.insert(t, &bad_utf8).unwrap_err();
    assert!(matches!(&err, Error::InvalidRow { column, .. } if column == "name"), "{err}");
    let err = tx.insert(t, &row[..row.len() - 1]).unwrap_err();
    assert!(matches!(&err, Error::InvalidRow { column, .. } if column == "name"), "{err}");
    let mut long = row.clone();
    long.push(0);
    assert!(matches!(tx.insert(t, &long), Err(Error::RowTrailingBytes { extra: 1, .. })));
    let err = tx.insert_values(t, &[Value::U64(1)]).unwrap_err();
    assert!(matches!(err, Error::ValueCount { expected: 6, found: 1, .. }), "{err}");
    let mut wrong = player(1, 1, "ann");
    wrong[2] = Value::string("not a float");
    let err = tx.insert_values(t, &wrong).unwrap_err();
    assert_eq!(
        err.to_string(),
        "table `player`, column `x`: expected a value of type f32, found \"not a float\""
    );
    assert_eq!(tx.table(t).len(), 0);
    tx.insert(t, &row).unwrap();
}

/// Long strings live in the chunk arena; rewriting them over and over compacts the
/// arena instead of growing it, and every value stays intact.
#[test]
fn arena_compaction_keeps_values() {
    let (mut db, t) = db_with(EngineConfig::default());
    let mut tx = db.begin();
    let rows: Vec<_> =
        (0..64u8).map(|i| tx.insert_values(t, &player(0, i, &"n".repeat(40))).unwrap()).collect();
    tx.commit();
    let heap_start = db.table(t).heap_bytes();
    for round in 0..200 {
        let mut tx = db.begin();
        for (i, &row) in rows.iter().enumerate() {
            let name = format!("{round:04}-{i:02}-{}", "long".repeat(10));
            tx.update_values(t, row, &player(i as u64 + 1, i as u8, &name)).unwrap();
        }
        tx.commit();
    }
    for (i, &row) in rows.iter().enumerate() {
        let name = format!("0199-{i:02}-{}", "long".repeat(10));
        assert_eq!(db.table(t).get(row).unwrap().value(ColId(5)), Value::string(name));
    }
    assert!(db.table(t).heap_bytes() < heap_start + 64 * 1024, "the arena was compacted");
}

/// A column scan over chunks, skipping vacant slots, sums the same as the rows say.
#[test]
fn column_scan_skips_vacant_slots() {
    let (mut db, t) = db_with(EngineConfig::default());
    let mut tx = db.begin();
    let rows: Vec<_> =
        (0..10_000u32).map(|i| tx.insert_values(t, &player(0, (i % 250) as u8, "p"))).collect();
    assert!(rows.iter().filter(|r| r.is_err()).count() > 0, "owner is unique: most inserts collide");
    tx.commit();

    let mut tx = db.begin();
    for i in 0..5000u32 {
        let mut owner = [0; 32];
        owner[..4].copy_from_slice(&i.to_le_bytes());
        owner[31] = 1;
        let row = vec![
            Value::U64(0),
            Value::Identity(Identity(owner)),
            Value::F32(i as f32),
            Value::F32(0.0),
            Value::U32(i),
            Value::string("q"),
        ];
        let id = tx.insert_values(t, &row).unwrap();
        if i % 3 == 0 {
            tx.delete(t, id).unwrap();
        }
    }
    tx.commit();
    let table = db.table(t);
    let mut sum = 0u64;
    for chunk in table.chunks() {
        let hp = chunk.column::<u32>(ColId(4)).unwrap();
        if chunk.is_dense() {
            sum += hp.iter().map(|&v| u64::from(v)).sum::<u64>();
        } else {
            sum += chunk.occupied_slots().map(|s| u64::from(hp[s])).sum::<u64>();
        }
    }
    let want: u64 = table
        .iter()
        .map(|r| match r.value(ColId(4)) {
            Value::U32(v) => u64::from(v),
            _ => unreachable!(),
        })
        .sum();
    assert_eq!(sum, want);
    assert!(table.chunks().next().unwrap().column::<u64>(ColId(4)).is_none(), "wrong width is refused");
}

/// 100k rows of the benchmark's player shape take at most 1.5x their raw bytes.
#[test]
fn storage_overhead_is_bounded() {
    let (mut db, t) = db_with(EngineConfig::default());
    let mut tx = db.begin();
    let mut raw = 0;
    for i in 0..100_000u32 {
        let mut owner = [0; 32];
        owner[..4].copy_from_slice(&i.to_le_bytes());
        let name = format!("player{:0w$}", i, w = 2 + (i % 9) as usize);
        raw += 8 + 32 + 4 + 4 + 4 + name.len();
        let row = vec![
            Value::U64(0),
            Value::Identity(Identity(owner)),
            Value::F32(1.0),
            Value::F32(2.0),
            Value::U32(100),
            Value::string(name),
        ];
        tx.insert_values(t, &row).unwrap();
    }
    tx.commit();
    let ratio = db.table(t).heap_bytes() as f64 / raw as f64;
    assert!(ratio <= 1.5, "storage is {ratio:.2}x the raw bytes");
}

/// A system for the tick tests: each work item inserts a player whose position comes
/// from the tick's random numbers; "fail" items insert and then fail, "panic" panics.
struct Spawner;

enum Work {
    Spawn(u8),
    /// Spawns two players in one transaction.
    SpawnPair(u8, u8),
    Fail(u8),
    Panic,
    Block(mpsc::Receiver<()>),
}

impl TickSystem for Spawner {
    type Work = Work;

    fn run_work(&mut self, tx: &mut Tx<'_>, ctx: &mut TickContext<'_>, work: Work) -> Result<(), String> {
        let t = tx.db().table_id("player").unwrap();
        match work {
            Work::Spawn(owner) => {
                let mut row = player(0, owner, "p");
                row[3] = Value::F32((ctx.rng().next_u64() % 1000) as f32);
                tx.insert_values(t, &row).map(drop).map_err(|e| e.to_string())
            }
            Work::SpawnPair(a, b) => {
                tx.insert_values(t, &player(0, a, "first")).map_err(|e| e.to_string())?;
                tx.insert_values(t, &player(0, b, "second")).map(drop).map_err(|e| e.to_string())
            }
            Work::Fail(owner) => {
                tx.insert_values(t, &player(0, owner, "doomed")).map_err(|e| e.to_string())?;
                Err("changed my mind".into())
            }
            Work::Panic => panic!("a bug in the system"),
            Work::Block(release) => release.recv().map_err(|e| e.to_string()),
        }
    }

    fn run_fixed(&mut self, tx: &mut Tx<'_>, ctx: &mut TickContext<'_>) -> Result<(), String> {
        let t = tx.db().table_id("player").unwrap();
        let mut row = player(0, 200 + (ctx.tick.0 % 50) as u8, "fixed");
        row[4] = Value::U32(ctx.delta.micros as u32);
        tx.insert_values(t, &row).map(drop).map_err(|e| e.to_string())
    }
}

/// A clock that advances 1 ms per reading.
struct SimClock(i64);

impl Clock for SimClock {
    fn now(&mut self) -> Timestamp {
        self.0 += 1000;
        Timestamp::from_micros(self.0)
    }
}

fn ticker(seed: u64) -> Ticker<Spawner> {
    let (db, _) = db_with(EngineConfig::default());
    Ticker::new(db, Spawner, Box::new(SimClock(0)), Box::new(SplitMix64::new(seed)))
}

/// With the same clock, seed and work, two tickers produce identical outputs and rows;
/// a failing or panicking item rolls back alone.
#[test]
fn ticks_are_deterministic_and_isolate_failures() {
    let run = |seed| {
        let mut ticker = ticker(seed);
        let outputs = vec![
            ticker.run_tick([Work::Spawn(1), Work::Fail(2), Work::Spawn(3)], false),
            ticker.run_tick([Work::Panic, Work::Spawn(4)], true),
            ticker.run_tick([Work::Spawn(5)], true),
        ];
        let t = ticker.db().table_id("player").unwrap();
        (outputs, all_rows(ticker.db(), t))
    };
    let (outputs, rows) = run(7);
    assert_eq!(run(7), (outputs.clone(), rows.clone()));
    assert_ne!(run(8).1, rows, "a different seed gives different positions");
    assert_eq!((outputs[0].committed, outputs[0].rolled_back), (2, 1));
    assert_eq!((outputs[1].committed, outputs[1].rolled_back), (2, 1));
    assert_eq!(outputs[0].changes[0].inserts.len(), 2);
    assert!(rows.iter().all(|r| r[5] != Value::string("doomed")));
    let fixed: Vec<_> =
        rows.iter().filter(|r| r[5] == Value::string("fixed")).map(|r| r[4].clone()).collect();
    assert_eq!(fixed, vec![Value::U32(0), Value::U32(1000)], "delta is clock time since the last fixed run");
}

/// The threaded loop runs submitted work, hands each tick to the sink, serves reads
/// between ticks, records metrics, and says clearly when its inbox is full.
#[test]
fn tick_loop_runs_work_and_reports_full_inbox() {
    let config = EngineConfig { inbox_capacity: 4, ..EngineConfig::default() };
    let (db, t) = db_with(config.clone());
    let ticker =
        Ticker::new(db, Spawner, Box::new(tickdb_engine::SystemClock), Box::new(SplitMix64::from_os()));
    let (sink, outputs) = mpsc::sync_channel::<TickOutput>(64);
    let handle = TickLoop::spawn(ticker, sink, &config).unwrap();

    let (release, blocked) = mpsc::channel();
    handle.submit(Work::Block(blocked)).unwrap();
    // The tick thread is stuck in the blocking item (or about to be), so the inbox
    // fills: some items may join the blocked tick's batch, then four more wait.
    let mut queued = 0;
    let full = loop {
        match handle.submit(Work::Spawn(queued as u8 + 10)) {
            Ok(()) => queued += 1,
            Err(e) => break e,
        }
        assert!(queued < 200, "the inbox must fill up while the tick thread is blocked");
    };
    assert_eq!(full, InboxError::Full { capacity: 4 });
    assert!(full.to_string().contains("busy"));
    release.send(()).unwrap();

    let mut inserted = 0;
    while inserted < queued {
        let output = outputs.recv().unwrap();
        inserted += output.changes.iter().map(|c| c.inserts.len()).sum::<usize>();
    }
    assert_eq!(inserted, queued);
    let count = handle.read(move |db| db.table(t).len()).unwrap();
    assert_eq!(count, queued);
    let metrics = handle.metrics();
    assert_eq!(metrics.committed, queued as u64 + 1);
    assert!(metrics.ticks >= 1);
    assert_eq!(metrics.tick_duration_us.len(), metrics.ticks);
    let db = handle.shutdown().unwrap();
    assert_eq!(db.table(t).len(), queued);
}

/// With a fixed rate and no work, the loop still ticks and runs the fixed systems.
#[test]
fn fixed_rate_ticks_run_without_work() {
    let config = EngineConfig {
        fixed_tick_interval: Some(std::time::Duration::from_millis(5)),
        ..EngineConfig::default()
    };
    let (db, t) = db_with(config.clone());
    let ticker = Ticker::new(db, Spawner, Box::new(SimClock(0)), Box::new(SplitMix64::new(1)));
    let (sink, outputs) = mpsc::sync_channel::<TickOutput>(64);
    let handle = TickLoop::spawn(ticker, sink, &config).unwrap();
    let first = outputs.recv().unwrap();
    assert_eq!(first.changes[0].table, t);
    assert_eq!(first.committed, 1);
    drop(outputs);
    assert!(!handle.shutdown().unwrap().table(t).is_empty());
}

/// A work item whose second insert violates a unique constraint rolls back whole: its
/// first insert is gone too, and the items around it in the tick commit.
#[test]
fn unique_violation_rolls_back_the_work_item() {
    let mut ticker = ticker(3);
    let output = ticker.run_tick([Work::Spawn(1), Work::SpawnPair(2, 1), Work::SpawnPair(3, 4)], false);
    assert_eq!((output.committed, output.rolled_back), (2, 1));
    let t = ticker.db().table_id("player").unwrap();
    let owners: Vec<Value> = all_rows(ticker.db(), t).into_iter().map(|r| r[1].clone()).collect();
    let owner = |o: u8| player(0, o, "").swap_remove(1);
    assert_eq!(owners.len(), 3);
    assert!(!owners.contains(&owner(2)), "the failed item's first insert was rolled back");
    assert!(owners.contains(&owner(3)) && owners.contains(&owner(4)));
}

/// A tick takes at most `tick_work_max` items; the rest wait for the next tick.
#[test]
fn ticks_take_at_most_tick_work_max_items() {
    let config = EngineConfig { tick_work_max: 2, ..EngineConfig::default() };
    let (db, t) = db_with(config.clone());
    let ticker = Ticker::new(db, Spawner, Box::new(SimClock(0)), Box::new(SplitMix64::new(1)));
    let (sink, outputs) = mpsc::sync_channel::<TickOutput>(64);
    let handle = TickLoop::spawn(ticker, sink, &config).unwrap();
    let (release, blocked) = mpsc::channel();
    handle.submit(Work::Block(blocked)).unwrap();
    for owner in 0..7 {
        handle.submit(Work::Spawn(owner)).unwrap();
    }
    release.send(()).unwrap();
    let mut done = 0;
    while done < 8 {
        let output = outputs.recv().unwrap();
        assert!(output.committed + output.rolled_back <= 2, "a tick ran {} items", output.committed);
        done += output.committed + output.rolled_back;
    }
    assert_eq!(handle.shutdown().unwrap().table(t).len(), 7);
}

/// A batch takes one inbox slot and may hold more items than a tick runs: the rest
/// run in the next ticks, in order, and a read submitted after the batch sees all of it.
#[test]
fn batches_run_in_order_across_ticks() {
    let config = EngineConfig { tick_work_max: 3, ..EngineConfig::default() };
    let (db, t) = db_with(config.clone());
    let ticker = Ticker::new(db, Spawner, Box::new(SimClock(0)), Box::new(SplitMix64::new(1)));
    let (sink, outputs) = mpsc::sync_channel::<TickOutput>(64);
    let handle = TickLoop::spawn(ticker, sink, &config).unwrap();
    let too_big = handle.submit_batch((0..4).map(Work::Spawn).collect());
    assert_eq!(too_big, Err(InboxError::BatchTooLarge { len: 4, max: 3 }));
    handle.submit_batch((0..3).map(Work::Spawn).collect()).unwrap();
    handle.submit_batch((3..6).map(Work::Spawn).collect()).unwrap();
    let count = handle.read(move |db| db.table(t).len()).unwrap();
    assert_eq!(count, 6, "the read ran after both batches");
    let mut sizes = Vec::new();
    while sizes.iter().sum::<u32>() < 6 {
        let output = outputs.recv().unwrap();
        assert!(output.committed <= 3);
        sizes.push(output.committed);
    }
    let owners: Vec<Value> =
        all_rows(&handle.shutdown().unwrap(), t).into_iter().map(|r| r[1].clone()).collect();
    let expected: Vec<Value> = (0..6).map(|o| player(0, o, "").swap_remove(1)).collect();
    assert_eq!(owners, expected, "rows arrive in submission order");
}

/// A u128 sequence ends with a clean error, not an overflow; and a row refused because
/// one sequence is exhausted leaves every other sequence where it was.
#[test]
fn exhausted_sequences_fail_cleanly_and_leave_no_trace() {
    let mut db = Database::new(EngineConfig::default()).unwrap();
    let schema = TableSchema::builder("big").column("id", ValueType::U128).auto_inc("id").build().unwrap();
    let big = db.create_table(schema).unwrap();
    let mut tx = db.begin();
    tx.insert_values(big, &[Value::U128(u128::MAX - 1)]).unwrap();
    tx.insert_values(big, &[Value::U128(u128::MAX)]).unwrap();
    let err = tx.insert_values(big, &[Value::U128(0)]).unwrap_err();
    assert!(matches!(err, Error::SequenceExhausted { .. }), "{err}");
    tx.commit();

    let schema = TableSchema::builder("two")
        .column("id", ValueType::U64)
        .column("n", ValueType::U8)
        .auto_inc("id")
        .auto_inc("n")
        .build()
        .unwrap();
    let two = db.create_table(schema).unwrap();
    let mut tx = db.begin();
    for _ in 0..255 {
        tx.insert_values(two, &[Value::U64(0), Value::U8(0)]).unwrap();
    }
    let err = tx.insert_values(two, &[Value::U64(0), Value::U8(0)]).unwrap_err();
    assert!(matches!(&err, Error::SequenceExhausted { column, .. } if column == "n"), "{err}");
    let row = tx.insert_values(two, &[Value::U64(0), Value::U8(9)]).unwrap();
    assert_eq!(tx.table(two).get(row).unwrap().value(ColId(0)), Value::U64(256), "id did not skip a value");
}

/// A read that panics fails with the panic's message; the database goes on serving.
#[test]
fn a_panicking_read_fails_alone() {
    let config = EngineConfig::default();
    let (db, t) = db_with(config.clone());
    let ticker = Ticker::new(db, Spawner, Box::new(SimClock(0)), Box::new(SplitMix64::new(1)));
    let handle = TickLoop::spawn(ticker, (), &config).unwrap();
    let err = handle.read(|_| -> usize { panic!("bad query") }).unwrap_err();
    assert_eq!(err, ReadError::Panicked("bad query".into()));
    handle.submit(Work::Spawn(1)).unwrap();
    assert_eq!(handle.read(move |db| db.table(t).len()).unwrap(), 1);
    assert!(handle.shutdown().is_some());
}

/// Limits that cannot work are refused up front, naming the field.
#[test]
fn unusable_configs_are_refused() {
    let zero_inbox = EngineConfig { inbox_capacity: 0, ..EngineConfig::default() };
    let err = Database::new(zero_inbox.clone()).unwrap_err();
    assert!(err.to_string().contains("inbox_capacity"), "{err}");
    let huge_rows = EngineConfig { row_bytes_max: 1 << 33, ..EngineConfig::default() };
    assert!(matches!(Database::new(huge_rows), Err(Error::Config(_))));
    let db = Database::new(EngineConfig::default()).unwrap();
    let ticker = Ticker::new(db, Spawner, Box::new(SimClock(0)), Box::new(SplitMix64::new(1)));
    let Err(err) = TickLoop::spawn(ticker, (), &zero_inbox) else { panic!("an empty inbox was accepted") };
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

/// Multi-column unique constraints work for each way a unique index stores keys: two
/// `u32`s (8 bytes, stored as one integer), two `u64`s (16 bytes, inline array) and a
/// string with a byte (variable length). Clashes are refused, a freed key can be
/// taken again, updates move keys, and rollback puts every key back.
#[test]
fn multi_column_unique_constraints() {
    type Column = (ValueType, fn(u8) -> Value);
    let pairs: [(Column, Column); 3] = [
        (
            (ValueType::U32, |v| Value::U32(u32::from(v))),
            (ValueType::U32, |v| Value::U32(u32::from(v) << 20)),
        ),
        (
            (ValueType::U64, |v| Value::U64(u64::from(v))),
            (ValueType::U64, |v| Value::U64(u64::from(v) << 40)),
        ),
        ((ValueType::String, |v| Value::string(format!("n{v}"))), (ValueType::U8, Value::U8)),
    ];
    for ((ta, a), (tb, b)) in pairs {
        let schema =
            TableSchema::builder("pair").column("a", ta).column("b", tb).unique(["a", "b"]).build().unwrap();
        let mut db = Database::new(EngineConfig::default()).unwrap();
        let t = db.create_table(schema).unwrap();
        let mut tx = db.begin();
        let r11 = tx.insert_values(t, &[a(1), b(1)]).unwrap();
        tx.insert_values(t, &[a(1), b(2)]).unwrap();
        tx.insert_values(t, &[a(2), b(1)]).unwrap();
        let clash = tx.insert_values(t, &[a(1), b(1)]).unwrap_err();
        assert!(matches!(clash, Error::UniqueViolation { .. }), "{clash}");
        tx.commit();

        let mut tx = db.begin();
        tx.delete(t, r11).unwrap();
        let r11b = tx.insert_values(t, &[a(1), b(1)]).unwrap();
        let clash = tx.update_values(t, r11b, &[a(2), b(1)]).unwrap_err();
        assert!(matches!(clash, Error::UniqueViolation { .. }), "{clash}");
        tx.update_values(t, r11b, &[a(3), b(3)]).unwrap();
        tx.insert_values(t, &[a(1), b(1)]).unwrap();
        tx.rollback();

        let table = db.table(t);
        let key = |x: u8, y: u8| table.key_from_values(&[ColId(0), ColId(1)], &[a(x), b(y)]).unwrap();
        assert_eq!(table.find_unique(0, &key(1, 1)), Some(r11), "rollback restored the original row's key");
        assert_eq!(table.find_unique(0, &key(3, 3)), None);
        assert_eq!(table.len(), 3);
    }
}

/// A spawner that asks for the own changes of its pair spawns and keeps them.
struct OwnChangesSpawner(Vec<Vec<TableChanges>>);

impl TickSystem for OwnChangesSpawner {
    type Work = Work;

    fn run_work(&mut self, tx: &mut Tx<'_>, ctx: &mut TickContext<'_>, work: Work) -> Result<(), String> {
        Spawner.run_work(tx, ctx, work)
    }

    fn wants_own_changes(&self, work: &Work) -> bool {
        matches!(work, Work::SpawnPair(..) | Work::Fail(_))
    }

    fn own_changes(&mut self, _db: &Database, changes: Vec<TableChanges>) {
        self.0.push(changes);
    }
}

/// Work that asks for its own changes gets exactly its transaction's, once it
/// commits; the tick's output still holds every transaction's.
#[test]
fn work_that_asks_gets_its_own_changes() {
    let (db, _) = db_with(EngineConfig::default());
    let system = OwnChangesSpawner(Vec::new());
    let mut ticker = Ticker::new(db, system, Box::new(SimClock(0)), Box::new(SplitMix64::new(1)));
    let output =
        ticker.run_tick([Work::Spawn(1), Work::SpawnPair(2, 3), Work::Fail(4), Work::Spawn(5)], false);
    assert_eq!(output.changes[0].inserts.len(), 4, "the tick's changes hold every committed insert");
    let own = &ticker.system().0;
    assert_eq!(own.len(), 1, "the failed item has no changes to hand on");
    assert_eq!(own[0].len(), 1);
    let ty = ValueType::Product(tickdb_wasm_abi::ProductType::new(
        player_schema().columns.iter().map(|c| (c.name.clone(), c.ty.clone())),
    ));
    let names: Vec<Value> = own[0][0]
        .inserts
        .iter()
        .map(|r| match tickdb_wasm_abi::decode_exact(&ty, r).unwrap() {
            Value::Product(values) => values[5].clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(names, [Value::string("first"), Value::string("second")]);
}

/// A system whose work waits for its batching ticks: those are due when the test
/// sets `batch`; it has other work of its own due when the test sets `other`. Each of
/// its ticks clears both.
struct Paced {
    batch: Arc<AtomicBool>,
    other: Arc<AtomicBool>,
}

fn due_if(flag: &AtomicBool) -> Timestamp {
    match flag.load(SeqCst) {
        true => Timestamp::from_micros(i64::MIN),
        false => Timestamp::from_micros(i64::MAX / 2),
    }
}

impl TickSystem for Paced {
    type Work = Work;

    fn run_work(&mut self, tx: &mut Tx<'_>, ctx: &mut TickContext<'_>, work: Work) -> Result<(), String> {
        Spawner.run_work(tx, ctx, work)
    }

    fn due_work(&mut self, _: Timestamp, _: &mut Vec<Work>) {
        self.batch.store(false, SeqCst);
        self.other.store(false, SeqCst);
    }

    fn next_due(&self) -> Option<Timestamp> {
        Some(due_if(&self.batch).min(due_if(&self.other)))
    }

    fn batch_due(&self) -> Option<Timestamp> {
        Some(due_if(&self.batch))
    }
}

/// Work for a system that batches it waits for the system's next batching tick, not
/// for any other of its due work, and then all of it runs, over consecutive ticks
/// when there is more than a tick takes; a read waits with it.
#[test]
fn batched_work_waits_for_the_batching_tick() {
    let config = EngineConfig { tick_work_max: 2, ..EngineConfig::default() };
    let (db, t) = db_with(config.clone());
    let (batch, other) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let system = Paced { batch: Arc::clone(&batch), other: Arc::clone(&other) };
    let ticker = Ticker::new(db, system, Box::new(SimClock(0)), Box::new(SplitMix64::new(1)));
    let (sink, outputs) = mpsc::sync_channel::<TickOutput>(64);
    let handle = TickLoop::spawn(ticker, sink, &config).unwrap();
    for owner in 0..3 {
        handle.submit(Work::Spawn(owner)).unwrap();
    }
    // The system's other work comes due; the next message wakes the loop, which runs
    // that work alone.
    other.store(true, SeqCst);
    handle.submit(Work::Spawn(3)).unwrap();
    let first = outputs.recv().unwrap();
    assert_eq!(first.committed, 0, "no call ran in a tick that was not a batching one");
    // The batching tick: five calls, two a tick, in three ticks one after the other.
    batch.store(true, SeqCst);
    handle.submit(Work::Spawn(4)).unwrap();
    let sizes: Vec<u32> = (0..3).map(|_| outputs.recv().unwrap().committed).collect();
    assert_eq!(sizes, [2, 2, 1]);
    assert!(!batch.load(SeqCst), "the first of them was the system's");
    assert_eq!(handle.read(move |db| db.table(t).len()).unwrap(), 5);
    drop(outputs);
    assert_eq!(handle.shutdown().unwrap().table(t).len(), 5);
}

//! SQL in-process: a one-off point query through the primary key, end to end (parse,
//! bind, plan, run, result values), against 100,000 players; a btree point query; each
//! parsed every time and through the statement cache; and
//! the deltas of 10,000 `zone = ?` subscriptions for a tick that updates 10,000 players;
//! 5,000 area-of-interest windows over 50,000 entities, 10% of them moving a tick; and
//! a scanning subscription's initial rows at once and in 1 ms slices.
//!
//! Run with `cargo bench -p tickdb-benches --bench sql`.

use std::time::Instant;

use hdrhistogram::Histogram;
use tickdb_engine::{Database, EngineConfig, Entropy, SplitMix64};
use tickdb_sql::{InitialScan, QueryLimits, StatementCache, Subscription, SubscriptionSet, query};
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
    initial_slices(&db);
    subscriptions(&mut db, t);
    area_of_interest();
}

/// A subscription that scans 100,000 players (`x >= 0`, every row): its initial rows at
/// once, and in slices of at most 1 ms (the first an attempt at once, cut short), the
/// longest slice being what a tick waits for.
fn initial_slices(db: &Database) {
    let sub = Subscription::new(db, "SELECT * FROM player WHERE x >= 0.0").expect("subscribe");
    let limits = QueryLimits::default();
    let started = Instant::now();
    let rows = sub.initial(db, &limits).expect("initial").len();
    let at_once = started.elapsed();
    let slice = QueryLimits { rows_max: u64::MAX, time_max: std::time::Duration::from_millis(1) };
    // The start tries the query at once within one slice, which counts as a slice.
    let started = Instant::now();
    let mut scan = InitialScan::start(db, &sub, &slice, &limits).expect("start");
    let (mut slices, mut longest) = (1, started.elapsed());
    loop {
        let started = Instant::now();
        let done = scan.step(db, &slice).expect("step");
        longest = longest.max(started.elapsed());
        slices += 1;
        if done {
            break;
        }
    }
    assert_eq!(scan.rows().expect("done").len(), rows);
    println!("\n| initial rows of a scan over 100,000 players | ms |");
    println!("|---|---|");
    println!("| at once | {:.2} |", at_once.as_secs_f64() * 1e3);
    println!("| in {slices} slices of 1 ms: the longest slice | {:.2} |", longest.as_secs_f64() * 1e3);
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
        let deltas = set.evaluate(db, &changes).deltas;
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

const WORLD: f32 = 1000.0;
const ENTITIES: u64 = 50_000;
const WINDOWS: u64 = 5_000;
/// A window's side: about 31 entities in each.
const SIDE: f32 = 25.0;

fn window_sql(x: f32, y: f32) -> String {
    let h = SIDE / 2.0;
    format!(
        "SELECT * FROM entity WHERE x BETWEEN {} AND {} AND y BETWEEN {} AND {}",
        x - h,
        x + h,
        y - h,
        y + h
    )
}

/// 5,000 players' windows (25 x 25, about 31 entities each) over 50,000 entities in a
/// 1000 x 1000 world with a grid index (16-wide cells) on the positions; each tick 10%
/// of the entities move a step, and the windows of the players among them move along
/// (unsubscribe, subscribe through the statement cache, initial rows through the
/// grid). Timed:
/// the tick's deltas through the area-of-interest index; the windows' moves; and, for
/// scale, the same deltas with every window tested against every row.
fn area_of_interest() {
    let mut db = Database::new(EngineConfig::default()).expect("db");
    let schema = TableSchema::builder("entity")
        .column("id", ValueType::U64)
        .column("x", ValueType::F32)
        .column("y", ValueType::F32)
        .column("hp", ValueType::I32)
        .primary_key(["id"])
        .grid_index(["x", "y"], 4)
        .build()
        .expect("schema");
    let t = db.create_table(schema).expect("table");
    let mut rng = SplitMix64::new(7);
    let mut unit = move || (rng.next_u64() >> 11) as f32 / (1u64 << 53) as f32;
    let mut pos: Vec<(f32, f32)> = (0..ENTITIES).map(|_| (unit() * WORLD, unit() * WORLD)).collect();
    let mut tx = db.begin();
    for (i, (x, y)) in pos.iter().enumerate() {
        tx.insert_values(t, &[Value::U64(i as u64), Value::F32(*x), Value::F32(*y), Value::I32(100)])
            .expect("insert");
    }
    tx.commit();
    let limits = QueryLimits::default();
    let cache = StatementCache::default();
    let mut set = SubscriptionSet::default();
    let mut naive = SubscriptionSet::default();
    let mut windows: Vec<tickdb_sql::QueryId> = (0..WINDOWS as usize)
        .map(|p| set.subscribe(&db, &window_sql(pos[p].0, pos[p].1)).expect("subscribe"))
        .collect();
    assert_eq!(set.stats().windows, WINDOWS as usize);
    for (x, y) in &pos[..WINDOWS as usize] {
        // The same window with a condition the index cannot see through: one by one.
        let sql = format!("{} OR FALSE", window_sql(*x, *y));
        naive.subscribe(&db, &sql).expect("subscribe");
    }
    assert_eq!(naive.stats().others, WINDOWS as usize);
    let (mut eval, mut moves, mut whole) = (hist(), hist(), hist());
    let mut naive_ms = Vec::new();
    let (mut delta_rows, mut initial_rows) = (0usize, 0usize);
    for round in 0..40u64 {
        let mut tx = db.begin();
        let mut moved_players = Vec::new();
        for k in 0..ENTITIES / 10 {
            let id = (round * 7919 + k * 10 + round % 10) % ENTITIES;
            let (x, y) = &mut pos[id as usize];
            *x = (*x + (unit() - 0.5) * 4.0).clamp(0.0, WORLD);
            *y = (*y + (unit() - 0.5) * 4.0).clamp(0.0, WORLD);
            let row = tx.find_by_primary_key(t, &[Value::U64(id)]).expect("key").expect("row");
            tx.update_values(t, row, &[Value::U64(id), Value::F32(*x), Value::F32(*y), Value::I32(100)])
                .expect("update");
            if id < WINDOWS {
                moved_players.push(id as usize);
            }
        }
        let changes = tx.commit().table_changes(&db);
        let started = Instant::now();
        let deltas = set.evaluate(&db, &changes).deltas;
        let evaluated = started.elapsed();
        let started = Instant::now();
        for &p in &moved_players {
            set.unsubscribe(windows[p]);
            let bound = cache.prepare(&db, &window_sql(pos[p].0, pos[p].1)).expect("prepare");
            windows[p] = set.add(Subscription::from_bound(&db, bound).expect("subscribe"));
            initial_rows +=
                set.query(windows[p]).expect("live").initial(&db, &limits).expect("initial").len();
        }
        let moved = started.elapsed();
        if round < 3 {
            let started = Instant::now();
            let naive_deltas = naive.evaluate(&db, &changes).deltas;
            naive_ms.push(started.elapsed().as_secs_f64() * 1e3);
            assert_eq!(naive_deltas.len(), deltas.len(), "the index finds the windows testing finds");
        }
        if round >= 5 {
            delta_rows = deltas.values().map(|d| d.inserts.len() + d.deletes.len() + d.updates.len()).sum();
            eval.saturating_record(evaluated.as_micros() as u64);
            moves.saturating_record(moved.as_micros() as u64);
            whole.saturating_record((evaluated + moved).as_micros() as u64);
        }
    }
    let ms = |h: &Histogram<u64>, q| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "\n| 5,000 windows over 50,000 entities, 5,000 moving a tick | ticks | ms p50 | ms p90 | ms p99 |"
    );
    println!("|---|---|---|---|---|");
    for (name, h) in [
        ("deltas through the area-of-interest index", &eval),
        ("windows of the moved players moved (~500 a tick, with initial rows)", &moves),
        ("both", &whole),
    ] {
        println!("| {name} | {} | {:.2} | {:.2} | {:.2} |", h.len(), ms(h, 0.5), ms(h, 0.9), ms(h, 0.99));
    }
    naive_ms.sort_by(f64::total_cmp);
    println!(
        "| deltas testing every window against every row (3 ticks) | 3 | {:.2} | | |",
        naive_ms[naive_ms.len() / 2]
    );
    println!(
        "\nrows in the last tick's deltas: {delta_rows}; initial rows sent for moved windows: {initial_rows}"
    );
}

fn hist() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds")
}

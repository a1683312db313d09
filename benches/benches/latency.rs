//! Latency distributions, recorded with hdrhistogram: what criterion's averages hide.
//!
//! - primary-key lookup: batches of 256 random lookups in 1M rows, per-lookup time of
//!   each batch (single lookups are too short for the clock), and the same lookups in a
//!   `HashMap` over a `Vec` of structs as the floor;
//! - rollback of a transaction with 1,000 writes (400 updates, 300 deletes, 300 inserts);
//! - a whole tick of the tick loop: 500 reducer-like work items (find a player by key,
//!   move it) as 500 transactions, merged into one tick changeset.
//!
//! Run with `cargo bench -p tickdb-benches --bench latency`.

use std::time::Instant;

use hdrhistogram::Histogram;
use tickdb_benches::{EncodedRows, X_OFFSET, loaded_db, mix, mixed_writes, players};
use tickdb_engine::{SplitMix64, SystemClock, TableId, TickContext, TickSystem, Ticker, Tx};

const ROWS: usize = 1_000_000;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds")
}

fn report(name: &str, unit: &str, h: &Histogram<u64>) {
    let q = |q| h.value_at_quantile(q);
    println!("| {name} | {} | {} | {} | {} | {} | {unit} |", h.len(), q(0.5), q(0.9), q(0.99), h.max());
}

/// Moves the player with the given id: a reducer's find, read, modify, write.
struct Mover {
    table: TableId,
    row: Vec<u8>,
}

impl TickSystem for Mover {
    type Work = u64;

    fn run_work(&mut self, tx: &mut Tx<'_>, _: &mut TickContext<'_>, id: u64) -> Result<(), String> {
        let t = tx.table(self.table);
        let pk = t.schema().primary_key.ok_or("no primary key")?;
        let rid =
            t.find_unique_encoded(pk, &id.to_le_bytes()).map_err(|e| e.to_string())?.ok_or("no player")?;
        self.row.clear();
        t.get(rid).ok_or("gone")?.encode_into(&mut self.row);
        let x = f32::from_le_bytes(self.row[X_OFFSET..X_OFFSET + 4].try_into().expect("4 bytes")) + 1.0;
        self.row[X_OFFSET..X_OFFSET + 4].copy_from_slice(&x.to_le_bytes());
        tx.update(self.table, rid, &self.row).map_err(|e| e.to_string())
    }
}

fn main() {
    let rows = EncodedRows::of(&players(ROWS));
    let (mut db, t) = loaded_db(&rows);
    let pk = db.table(t).schema().primary_key.expect("player has a primary key");
    println!("| operation | samples | p50 | p90 | p99 | max | unit |");
    println!("|---|---|---|---|---|---|---|");

    let mut lookups = histogram();
    for batch in 0..4000u64 {
        let table = db.table(t);
        let start = Instant::now();
        for i in 0..256 {
            let id = mix(batch * 256 + i) % ROWS as u64 + 1;
            let row = table.find_unique_encoded(pk, &id.to_le_bytes()).expect("u64 key").expect("a row");
            std::hint::black_box(table.get(row));
        }
        lookups.saturating_record((start.elapsed().as_nanos() / 256) as u64);
    }
    report("pk lookup, 1M rows (mean of 256)", "ns", &lookups);

    // The floor on this machine: the same lookups in a `HashMap` over a `Vec` of structs.
    let structs = players(ROWS);
    let by_id: hashbrown::HashMap<u64, usize> = structs.iter().enumerate().map(|(i, p)| (p.id, i)).collect();
    let mut baseline = histogram();
    for batch in 0..4000u64 {
        let start = Instant::now();
        for i in 0..256 {
            let id = mix(batch * 256 + i) % ROWS as u64 + 1;
            std::hint::black_box(structs[by_id[&id]].x);
        }
        baseline.saturating_record((start.elapsed().as_nanos() / 256) as u64);
    }
    report("HashMap + Vec lookup, 1M rows (mean of 256)", "ns", &baseline);
    drop((structs, by_id));

    let new_rows = EncodedRows::of(&players(ROWS + 1000)[ROWS..]);
    let mut rollbacks = histogram();
    for round in 0..300u64 {
        let mut tx = db.begin();
        mixed_writes(&mut tx, t, &new_rows, ROWS, round + 1);
        let start = Instant::now();
        tx.rollback();
        rollbacks.saturating_record(start.elapsed().as_micros() as u64);
    }
    report("rollback of 1,000 writes to rows not in cache", "µs", &rollbacks);

    let mut ticker = Ticker::new(
        db,
        Mover { table: t, row: Vec::new() },
        Box::new(SystemClock),
        Box::new(SplitMix64::new(1)),
    );
    let mut ticks = histogram();
    for tick in 0..400u64 {
        let work: Vec<u64> = (0..500).map(|i| mix(tick * 500 + i) % ROWS as u64 + 1).collect();
        let start = Instant::now();
        let output = ticker.run_tick(work, false);
        ticks.saturating_record(start.elapsed().as_micros() as u64);
        assert_eq!(output.committed, 500);
    }
    report("tick of 500 move transactions, 1M rows", "µs", &ticks);
}

//! The client SDK's cache: what applying the server's messages costs a client. A
//! client holding the 1,000 players around it, as an MMO client or a load-test bot
//! does, gets a tick in which 300 of them move (an update with the changed column,
//! the position, as the server sends it), 10 enter and 10 leave. Measured:
//! the time to apply each tick to the cache (decoding, patching the changed columns
//! in, decoding the new row, keeping the unique index), with hdrhistogram, over 5,000
//! ticks; and the time to take in 10,000 rows at once (a subscription's initial rows).
//!
//! Run with `cargo bench -p tickdb-benches --bench sdk`.

use std::sync::Arc;
use std::time::Instant;

use hdrhistogram::Histogram;
use tickdb_protocol::{RowList, RowUpdates, TableUpdate};
use tickdb_sdk::bench::Cache;
use tickdb_sdk::{AnyRow, TableDesc, Type};

/// A player as the client decodes it: (id, position (x, y), hp, name).
type Player = (u64, (f32, f32), u32, String);

fn desc() -> TableDesc {
    TableDesc {
        name: "player",
        row_type: <Player as Type>::value_type,
        primary_key: &[0],
        unique: &[0],
        decode: |bytes| <Player as Type>::from_bytes(bytes).map(|p| Arc::new(p) as AnyRow),
    }
}

fn player(id: u64, tick: u32) -> Vec<u8> {
    (id, (id as f32 + tick as f32 * 0.1, 5.0f32), 100u32, format!("player-{id:06}")).to_bytes()
}

/// Tick `tick`'s changes: 300 of the held players move, 10 enter and 10 leave.
fn tick_update(tick: u32, first: u64, held: u64) -> TableUpdate {
    let (mut keys, mut values) = (RowList::default(), RowList::default());
    let mut changed = Vec::new();
    for i in 0..300 {
        let id = first + 10 + (u64::from(tick) * 7 + i * 3) % (held - 20);
        keys.push(&id.to_bytes());
        values.push(&(id as f32 + tick as f32, tick as f32).to_bytes());
        changed.push(0b0010);
    }
    let inserts: RowList = (0..10)
        .map(|i| player(first + held + i, tick))
        .collect::<Vec<_>>()
        .iter()
        .map(Vec::as_slice)
        .collect();
    let deletes: RowList =
        (0..10).map(|i| player(first + i, 0)).collect::<Vec<_>>().iter().map(Vec::as_slice).collect();
    TableUpdate {
        table_id: 0,
        table_name: "player".into(),
        inserts,
        deletes,
        updates: RowUpdates { keys, changed, values },
    }
}

fn main() {
    const HELD: u64 = 1_000;
    const TICKS: u32 = 5_000;
    let mut cache = Cache::new(&[desc()]);
    let rows: Vec<Vec<u8>> = (0..HELD).map(|id| player(id, 0)).collect();
    cache.subscribe(1, "player", rows.iter().map(Vec::as_slice).collect());
    let mut per_tick = Histogram::<u64>::new(3).unwrap();
    let mut first = 0;
    let started = Instant::now();
    for tick in 1..=TICKS {
        // The held rows are ids first..first + HELD: the 10 lowest leave, 10 new
        // ones enter above, and 300 in between move.
        let update = tick_update(tick, first, HELD);
        let t = Instant::now();
        let events = cache.apply(1, &update);
        per_tick.record(t.elapsed().as_nanos() as u64).unwrap();
        assert_eq!(events, 320);
        first += 10;
    }
    let total = started.elapsed();
    assert_eq!(cache.len(0), HELD as usize);
    let us = |q: f64| per_tick.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "sdk apply: {HELD} rows held, 300 updated + 10 in + 10 out per tick: p50 {:.1} µs, p99 {:.1} µs per tick; \
         {:.2}M row changes/s on one core ({TICKS} ticks in {total:.2?})",
        us(0.5),
        us(0.99),
        320.0 / per_tick.mean() * 1e3,
    );

    let initial: Vec<Vec<u8>> = (0..10_000).map(|id| player(id, 0)).collect();
    let mut times = Vec::new();
    for _ in 0..5 {
        let mut cache = Cache::new(&[desc()]);
        let t = Instant::now();
        cache.subscribe(1, "player", initial.iter().map(Vec::as_slice).collect());
        times.push(t.elapsed());
    }
    times.sort();
    println!("sdk initial rows: 10,000 rows into an empty cache: {:.2?} (median of 5)", times[2]);
}

//! Memory used by 1M player rows in tickdb and in the baselines, measured by a counting
//! global allocator (bytes live after loading, allocator overhead not included).
//!
//! Run with `cargo bench -p tickdb-benches --bench memory`.

use std::sync::atomic::Ordering;

use bevy_ecs::prelude::*;
use hashbrown::HashMap;
use tickdb_benches::{Counting, EncodedRows, LIVE_BYTES, Player, empty_db, players, raw_bytes};
use tickdb_engine::{Database, EngineConfig};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes still allocated after `build` returns its result (which is kept alive).
fn measure<T>(build: impl FnOnce() -> T) -> (T, usize) {
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let value = build();
    let after = LIVE_BYTES.load(Ordering::Relaxed);
    (value, after.saturating_sub(before))
}

#[derive(Component)]
struct Id(#[allow(dead_code)] u64);
#[derive(Component)]
struct Owner(#[allow(dead_code)] [u8; 32]);
#[derive(Component)]
struct XPos(#[allow(dead_code)] f32);
#[derive(Component)]
struct YPos(#[allow(dead_code)] f32);
#[derive(Component)]
struct Hp(#[allow(dead_code)] u32);
#[derive(Component)]
struct Name(#[allow(dead_code)] String);

fn load_tickdb(rows: &EncodedRows, with_pk: bool) -> Database {
    let (mut db, t) = if with_pk {
        empty_db()
    } else {
        let mut db = Database::new(EngineConfig::default()).expect("default config is valid");
        let mut schema = tickdb_benches::player_schema();
        schema.unique.clear();
        schema.primary_key = None;
        let t = db.create_table(schema).unwrap();
        (db, t)
    };
    let mut tx = db.begin();
    for row in rows.iter() {
        tx.insert(t, row).unwrap();
    }
    drop(tx.commit());
    db
}

fn main() {
    const ROWS: usize = 1_000_000;
    let players: Vec<Player> = players(ROWS);
    let rows = EncodedRows::of(&players);
    let raw = raw_bytes(&players);
    println!("| store | bytes/row | x raw ({:.1} B/row) |", raw as f64 / ROWS as f64);
    println!("|---|---|---|");
    let report = |name: &str, bytes: usize| {
        println!("| {name} | {:.1} | {:.2} |", bytes as f64 / ROWS as f64, bytes as f64 / raw as f64);
    };

    let (db, rows_only) = measure(|| load_tickdb(&rows, false));
    report("tickdb rows (no index)", rows_only);
    drop(db);
    let (db, with_pk) = measure(|| load_tickdb(&rows, true));
    report("tickdb rows + pk hash index", with_pk);
    let table = db.tables().next().unwrap();
    report("  of which pk index (by capacity)", table.index_heap_bytes());
    drop(db);

    // The baselines clone each player inside the measurement, so its name counts.
    let (store, vec_bytes) = measure(|| {
        let mut by_id = HashMap::with_capacity(players.len());
        let mut v = Vec::with_capacity(players.len());
        for p in &players {
            by_id.insert(p.id, v.len());
            v.push(p.clone());
        }
        (v, by_id)
    });
    report("Vec<Player> + HashMap<u64, usize>", vec_bytes);
    drop(store);

    let (world, bevy_bytes) = measure(|| {
        let mut world = World::new();
        let mut by_id = HashMap::with_capacity(players.len());
        for p in players.iter().cloned() {
            let e =
                world.spawn((Id(p.id), Owner(p.owner), XPos(p.x), YPos(p.y), Hp(p.hp), Name(p.name))).id();
            by_id.insert(p.id, e);
        }
        (world, by_id)
    });
    report("bevy_ecs typed + HashMap<u64, Entity>", bevy_bytes);
    drop(world);
}

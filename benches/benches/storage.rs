//! Storage benchmarks: tickdb against a plain `Vec` + `HashMap` store and bevy_ecs,
//! on the player table of `tickdb_benches`. Targets and results are in BENCHMARKS.md.
//!
//! Run with `cargo bench -p tickdb-benches --bench storage`.

#![allow(
    unsafe_code,
    reason = "bevy_ecs's runtime-registered components are only reachable through unsafe APIs"
)]

use std::alloc::Layout;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use bevy_ecs::component::{ComponentCloneBehavior, ComponentDescriptor, ComponentId, StorageType};
use bevy_ecs::prelude::*;
use bevy_ecs::ptr::OwningPtr;
use bevy_ecs::world::FilteredEntityRef;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use hashbrown::HashMap;
use tickdb_benches::{
    EncodedRows, Player, X_OFFSET, Y_OFFSET, empty_db, loaded_db, mix, mixed_writes, pk_key, players,
};
use tickdb_engine::{Database, KeyBytes, RowId, TableId};
use tickdb_wasm_abi::ColId;

const ROWS: usize = 1_000_000;
const UPDATES: usize = 100_000;
const ROLLBACK_WRITES: usize = 1000;
const X: ColId = ColId(2);

#[derive(Component)]
struct Id(#[allow(dead_code)] u64);
#[derive(Component)]
struct Owner(#[allow(dead_code)] [u8; 32]);
#[derive(Component)]
struct XPos(f32);
#[derive(Component)]
struct YPos(f32);
#[derive(Component)]
struct Hp(#[allow(dead_code)] u32);
#[derive(Component)]
struct Name(#[allow(dead_code)] String);

/// The typed bevy_ecs baseline: one entity per player, and a `HashMap` for the key,
/// since bevy has no indexes.
fn bevy_typed(players: Vec<Player>) -> (World, HashMap<u64, Entity>) {
    let mut world = World::new();
    let mut by_id = HashMap::with_capacity(players.len());
    for p in players {
        let e = world.spawn((Id(p.id), Owner(p.owner), XPos(p.x), YPos(p.y), Hp(p.hp), Name(p.name))).id();
        by_id.insert(p.id, e);
    }
    (world, by_id)
}

/// bevy_ecs with components registered at run time, as a database with runtime-defined
/// columns would have to use it: four fixed-size columns (id, x, y, hp).
struct BevyDynamic {
    world: World,
    ids: [ComponentId; 4],
}

fn bevy_dynamic(players: &[Player]) -> BevyDynamic {
    let mut world = World::new();
    let mut register = |name: &'static str, layout: Layout| {
        // SAFETY: the components hold plain old data (u64, f32, u32) that needs no drop
        // and is Send + Sync, and every value inserted below has exactly this layout.
        let descriptor = unsafe {
            ComponentDescriptor::new_with_layout(
                name,
                StorageType::Table,
                layout,
                None,
                true,
                false,
                ComponentCloneBehavior::Default,
                None,
            )
        };
        world.register_component_with_descriptor(descriptor)
    };
    let ids = [
        register("id", Layout::new::<u64>()),
        register("x", Layout::new::<f32>()),
        register("y", Layout::new::<f32>()),
        register("hp", Layout::new::<u32>()),
    ];
    for p in players {
        let mut entity = world.spawn_empty();
        OwningPtr::make(p.id, |id| {
            OwningPtr::make(p.x, |x| {
                OwningPtr::make(p.y, |y| {
                    OwningPtr::make(p.hp, |hp| {
                        // SAFETY: each pointer points to a value of the layout registered
                        // for the component id at the same position.
                        unsafe { entity.insert_by_ids(&ids, [id, x, y, hp].into_iter()) };
                    })
                })
            })
        });
    }
    BevyDynamic { world, ids }
}

fn vec_store(players: Vec<Player>) -> (Vec<Player>, HashMap<u64, usize>) {
    let mut by_id = HashMap::with_capacity(players.len());
    let mut rows = Vec::with_capacity(players.len());
    for p in players {
        by_id.insert(p.id, rows.len());
        rows.push(p);
    }
    (rows, by_id)
}

fn insert(c: &mut Criterion) {
    let players = players(ROWS);
    let rows = EncodedRows::of(&players);
    let mut g = c.benchmark_group("insert_1m");
    g.sample_size(10).throughput(Throughput::Elements(ROWS as u64));
    g.bench_function("tickdb", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (mut db, t) = empty_db();
                let mut tx = db.begin();
                let start = Instant::now();
                for row in rows.iter() {
                    tx.insert(t, row).unwrap();
                }
                total += start.elapsed();
                tx.commit();
            }
            total
        })
    });
    g.bench_function("tickdb_with_commit", |b| {
        b.iter_batched(
            empty_db,
            |(mut db, t)| {
                let mut tx = db.begin();
                for row in rows.iter() {
                    tx.insert(t, row).unwrap();
                }
                let changeset = tx.commit();
                (db, changeset)
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("vec_hashmap", |b| {
        b.iter_batched(|| players.clone(), vec_store, BatchSize::PerIteration)
    });
    g.bench_function("bevy_typed", |b| {
        b.iter_batched(|| players.clone(), bevy_typed, BatchSize::PerIteration)
    });
    g.bench_function("bevy_dynamic_4_columns", |b| b.iter_with_large_drop(|| bevy_dynamic(&players)));
    g.finish();
}

/// Ids in a shuffled order, for lookups and updates that do not walk memory in order.
fn shuffled_ids(n: usize) -> Vec<u64> {
    (0..n as u64).map(|i| mix(i ^ 0xABCD) % ROWS as u64 + 1).collect()
}

fn pk_lookup(c: &mut Criterion) {
    let players = players(ROWS);
    let (db, t) = loaded_db(&EncodedRows::of(&players));
    let (vec_rows, vec_ids) = vec_store(players.clone());
    let (world, bevy_ids) = bevy_typed(players);
    let ids = shuffled_ids(4096);
    let table = db.table(t);
    let pk = table.schema().primary_key.unwrap();
    let mut g = c.benchmark_group("pk_lookup");
    let mut i = 0;
    let mut next = || {
        i = (i + 1) % ids.len();
        ids[i]
    };
    g.bench_function("tickdb", |b| {
        b.iter(|| {
            let row = table.find_unique_encoded(pk, &next().to_le_bytes()).unwrap().unwrap();
            black_box(table.get(row).unwrap().stored(X));
        })
    });
    g.bench_function("vec_hashmap", |b| b.iter(|| black_box(vec_rows[vec_ids[&next()]].x)));
    g.bench_function("bevy_typed", |b| b.iter(|| black_box(world.get::<XPos>(bevy_ids[&next()]).unwrap().0)));
    g.finish();

    // The measured choice for unique indexes: hashing against a btree, same keys.
    let keys: Vec<KeyBytes> = (1..=ROWS as u64).map(|id| pk_key(&db, t, id)).collect();
    let hash: HashMap<KeyBytes, RowId> =
        keys.iter().enumerate().map(|(i, k)| (k.clone(), RowId(i as u32))).collect();
    let btree: BTreeMap<KeyBytes, RowId> =
        keys.iter().enumerate().map(|(i, k)| (k.clone(), RowId(i as u32))).collect();
    let probes: Vec<&KeyBytes> = ids.iter().map(|&id| &keys[id as usize - 1]).collect();
    let mut g = c.benchmark_group("unique_index_choice");
    let mut j = 0;
    let mut probe = || {
        j = (j + 1) % probes.len();
        probes[j].as_slice()
    };
    g.bench_function("hash", |b| b.iter(|| black_box(hash.get(probe()))));
    g.bench_function("btree", |b| b.iter(|| black_box(btree.get(probe()))));
    g.finish();
}

/// Updates `x` and `y` of `ids` the way a reducer does: find by key, read, write back.
/// Times the updates; the rollback that restores the table afterwards is not timed.
fn update_xy(db: &mut Database, t: TableId, ids: &[u64]) -> Duration {
    let pk = db.table(t).schema().primary_key.unwrap();
    let mut tx = db.begin();
    let mut row = Vec::with_capacity(128);
    let start = Instant::now();
    for id in ids {
        let rid = tx.table(t).find_unique_encoded(pk, &id.to_le_bytes()).unwrap().unwrap();
        row.clear();
        tx.table(t).get(rid).unwrap().encode_into(&mut row);
        row[X_OFFSET..X_OFFSET + 4].copy_from_slice(&(*id as f32).to_le_bytes());
        row[Y_OFFSET..Y_OFFSET + 4].copy_from_slice(&(*id as f32 * 0.5).to_le_bytes());
        tx.update(t, rid, &row).unwrap();
    }
    let elapsed = start.elapsed();
    tx.rollback();
    elapsed
}

fn update(c: &mut Criterion) {
    let players = players(ROWS);
    let (mut db, t) = loaded_db(&EncodedRows::of(&players));
    let (mut vec_rows, vec_ids) = vec_store(players.clone());
    let (mut world, bevy_ids) = bevy_typed(players);
    // Random ids (a different player each time, as client calls arrive), and the first
    // 100k ids in key order (as a system walking its players would).
    let ids: Vec<u64> = (0..UPDATES as u64).map(|i| mix(i) % ROWS as u64 + 1).collect();
    let ordered: Vec<u64> = (1..=UPDATES as u64).collect();
    let mut g = c.benchmark_group("update_xy_100k");
    g.sample_size(20).throughput(Throughput::Elements(UPDATES as u64));
    g.bench_function("tickdb", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| update_xy(&mut db, t, &ids)).sum())
    });
    g.bench_function("tickdb_key_order", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| update_xy(&mut db, t, &ordered)).sum())
    });
    g.bench_function("tickdb_with_commit", |b| {
        b.iter_custom(|iters| {
            let pk = db.table(t).schema().primary_key.unwrap();
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let mut tx = db.begin();
                let mut row = Vec::with_capacity(128);
                for id in &ids {
                    let rid = tx.table(t).find_unique_encoded(pk, &id.to_le_bytes()).unwrap().unwrap();
                    row.clear();
                    tx.table(t).get(rid).unwrap().encode_into(&mut row);
                    row[X_OFFSET..X_OFFSET + 4].copy_from_slice(&(*id as f32 + 1.0).to_le_bytes());
                    tx.update(t, rid, &row).unwrap();
                }
                black_box(tx.commit());
                total += start.elapsed();
            }
            total
        })
    });
    for (name, ids) in [("vec_hashmap", &ids), ("vec_hashmap_key_order", &ordered)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                for &id in ids {
                    let p = &mut vec_rows[vec_ids[&id]];
                    p.x = id as f32;
                    p.y = id as f32 * 0.5;
                }
            })
        });
    }
    g.bench_function("bevy_typed", |b| {
        b.iter(|| {
            for &id in &ids {
                let e = bevy_ids[&id];
                world.get_mut::<XPos>(e).unwrap().0 = id as f32;
                world.get_mut::<YPos>(e).unwrap().0 = id as f32 * 0.5;
            }
        })
    });
    g.finish();
}

fn sum_column(c: &mut Criterion) {
    let players = players(ROWS);
    let (db, t) = loaded_db(&EncodedRows::of(&players));
    let xs: Vec<f32> = players.iter().map(|p| p.x).collect();
    let dynamic = bevy_dynamic(&players);
    let (mut world, _) = bevy_typed(players.clone());
    let mut g = c.benchmark_group("sum_f32_1m");
    g.throughput(Throughput::Elements(ROWS as u64));
    g.bench_function("tickdb_chunks", |b| b.iter(|| black_box(sum_x(&db, t))));
    g.bench_function("plain_vec_f32", |b| b.iter(|| black_box(xs.iter().sum::<f32>())));
    g.bench_function("vec_of_structs", |b| b.iter(|| black_box(players.iter().map(|p| p.x).sum::<f32>())));
    let mut query = world.query::<&XPos>();
    g.bench_function("bevy_typed_query", |b| {
        b.iter(|| black_box(query.iter(&world).map(|x| x.0).sum::<f32>()))
    });
    let mut dynamic = dynamic;
    let x_id = dynamic.ids[1];
    let mut query = QueryBuilder::<FilteredEntityRef<'_, '_>>::new(&mut dynamic.world).ref_id(x_id).build();
    g.bench_function("bevy_dynamic_query", |b| {
        b.iter(|| {
            let sum: f32 = query
                .iter(&dynamic.world)
                // SAFETY: component `x_id` was registered with the layout of f32.
                .map(|e| unsafe { *e.get_by_id(x_id).unwrap().deref::<f32>() })
                .sum();
            black_box(sum)
        })
    });
    g.finish();
}

fn sum_x(db: &Database, t: TableId) -> f32 {
    let mut sum = 0.0f32;
    for chunk in db.table(t).chunks() {
        let xs = chunk.column::<f32>(X).unwrap();
        if chunk.is_dense() {
            sum += xs.iter().sum::<f32>();
        } else {
            sum += chunk.occupied_slots().map(|s| xs[s]).sum::<f32>();
        }
    }
    sum
}

fn rollback(c: &mut Criterion) {
    let players = players(ROWS);
    let (mut db, t) = loaded_db(&EncodedRows::of(&players));
    let new_rows = EncodedRows::of(&tickdb_benches::players(ROWS + ROLLBACK_WRITES)[ROWS..]);
    let mut g = c.benchmark_group("rollback_1000_writes");
    // The same rows every time (round 0), so they are in cache: the latency benchmark
    // measures rows that are not.
    g.bench_function("tickdb", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut tx = db.begin();
                mixed_writes(&mut tx, t, &new_rows, ROWS, 0);
                assert!(tx.undo_len() >= ROLLBACK_WRITES * 9 / 10);
                let start = Instant::now();
                tx.rollback();
                total += start.elapsed();
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, insert, pk_lookup, update, sum_column, rollback);
criterion_main!(benches);

//! A small world running on the engine's tick loop, on its default settings plus a
//! 20 Hz fixed-rate system: simulated clients join players and send moves as work items,
//! each its own transaction; every fixed tick moves all players by their velocity. At
//! the end it prints what the ticks did and how long they took.
//!
//! Run with `cargo run --release -p tickdb-engine --example tick_demo`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tickdb_engine::{
    Database, EngineConfig, InboxError, Releases, SplitMix64, SystemClock, TableId, TickContext, TickLoop,
    TickOutput, TickSink, TickSystem, Ticker, Tx,
};
use tickdb_wasm_abi::{ColId, Identity, TableSchema, Value, ValueType};

const CLIENTS: u32 = 4;
const PLAYERS_PER_CLIENT: u32 = 2500;
const RUN_FOR: Duration = Duration::from_secs(3);

enum Work {
    Join { owner: Identity, name: String },
    Move { owner: Identity, vx: f32, vy: f32 },
}

struct World {
    player: TableId,
}

impl World {
    fn find(&self, tx: &Tx<'_>, owner: Identity) -> Result<tickdb_engine::RowId, String> {
        let table = tx.table(self.player);
        let unique = table.unique_constraint("player_owner_key").map_err(|e| e.to_string())?;
        let key = table.key_from_values(&[ColId(1)], &[Value::Identity(owner)]).map_err(|e| e.to_string())?;
        table.find_unique(unique, &key).ok_or_else(|| "not joined".to_string())
    }
}

impl TickSystem for World {
    type Work = Work;

    fn run_work(&mut self, tx: &mut Tx<'_>, _: &mut TickContext<'_>, work: Work) -> Result<(), String> {
        match work {
            Work::Join { owner, name } => {
                let row = [0.0f32, 0.0, 0.0, 0.0].map(Value::F32);
                let values =
                    [vec![Value::U64(0), Value::Identity(owner)], row.to_vec(), vec![Value::string(name)]];
                tx.insert_values(self.player, &values.concat()).map(drop).map_err(|e| e.to_string())
            }
            Work::Move { owner, vx, vy } => {
                let row = self.find(tx, owner)?;
                let mut values = tx.table(self.player).get(row).expect("found").to_values();
                values[4] = Value::F32(vx);
                values[5] = Value::F32(vy);
                tx.update_values(self.player, row, &values).map_err(|e| e.to_string())
            }
        }
    }

    /// Moves every player with a velocity. Finding them is a column scan over `vx`
    /// and `vy`; each move rewrites the row's encoding at the fixed offsets of `x`, `y`.
    fn run_fixed(&mut self, tx: &mut Tx<'_>, ctx: &mut TickContext<'_>) -> Result<(), String> {
        let dt = ctx.delta.micros as f32 / 1e6;
        let mut moving = Vec::new();
        for chunk in tx.table(self.player).chunks() {
            let (vx, vy) = (chunk.column::<f32>(VX).expect("f32"), chunk.column::<f32>(VY).expect("f32"));
            moving.extend(
                chunk.occupied_slots().filter(|&s| vx[s] != 0.0 || vy[s] != 0.0).map(|s| chunk.row_id(s)),
            );
        }
        let mut row = Vec::new();
        for id in moving {
            row.clear();
            tx.table(self.player).get(id).expect("a live row").encode_into(&mut row);
            let f32_at =
                |row: &[u8], at: usize| f32::from_le_bytes(row[at..at + 4].try_into().expect("4 bytes"));
            let x = f32_at(&row, X_AT) + f32_at(&row, VX_AT) * dt;
            let y = f32_at(&row, Y_AT) + f32_at(&row, VY_AT) * dt;
            row[X_AT..X_AT + 4].copy_from_slice(&x.to_le_bytes());
            row[Y_AT..Y_AT + 4].copy_from_slice(&y.to_le_bytes());
            tx.update(self.player, id, &row).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// Columns of `vx` and `vy`, and byte offsets in an encoded row of the fixed-size
/// columns after `id` (8 bytes) and `owner` (32 bytes).
const VX: ColId = ColId(4);
const VY: ColId = ColId(5);
const X_AT: usize = 40;
const Y_AT: usize = 44;
const VX_AT: usize = 48;
const VY_AT: usize = 52;

/// Counts the rows each tick changed (where the commit log and subscriptions will go).
struct RowsChanged(Arc<AtomicUsize>);

impl TickSink for RowsChanged {
    fn tick_committed(&mut self, _: &Database, output: TickOutput, releases: Releases) -> Result<(), String> {
        let rows: usize = output.changes.iter().map(|c| c.rows_changed()).sum();
        self.0.fetch_add(rows, Ordering::Relaxed);
        releases.release(Ok(()));
        Ok(())
    }
}

fn owner(client: u32, i: u32) -> Identity {
    let mut id = [0u8; 32];
    id[..4].copy_from_slice(&client.to_le_bytes());
    id[4..8].copy_from_slice(&i.to_le_bytes());
    Identity(id)
}

fn main() {
    let config =
        EngineConfig { fixed_tick_interval: Some(Duration::from_millis(50)), ..EngineConfig::default() };
    let mut db = Database::new(config.clone()).expect("valid config");
    let schema = TableSchema::builder("player")
        .column("id", ValueType::U64)
        .column("owner", ValueType::Identity)
        .column("x", ValueType::F32)
        .column("y", ValueType::F32)
        .column("vx", ValueType::F32)
        .column("vy", ValueType::F32)
        .column("name", ValueType::String)
        .primary_key(["id"])
        .auto_inc("id")
        .unique(["owner"])
        .public()
        .build()
        .expect("valid schema");
    let player = db.create_table(schema).expect("new table");
    let ticker = Ticker::new(db, World { player }, Box::new(SystemClock), Box::new(SplitMix64::from_os()));
    let rows_changed = Arc::new(AtomicUsize::new(0));
    let sink = RowsChanged(Arc::clone(&rows_changed));
    let handle = TickLoop::spawn(ticker, sink, &config).expect("tick thread");

    let started = Instant::now();
    let (mut submitted, mut refused) = (0u64, 0u64);
    let mut rng = SplitMix64::new(1);
    for client in 0..CLIENTS {
        for i in 0..PLAYERS_PER_CLIENT {
            let work = Work::Join { owner: owner(client, i), name: format!("player-{client}-{i}") };
            match handle.submit(work) {
                Ok(()) => submitted += 1,
                Err(InboxError::Full { .. }) => refused += 1,
                Err(e) => panic!("{e}"),
            }
        }
    }
    while started.elapsed() < RUN_FOR {
        use tickdb_engine::Entropy;
        for _ in 0..500 {
            let r = rng.next_u64();
            let who =
                owner((r % u64::from(CLIENTS)) as u32, ((r >> 8) % u64::from(PLAYERS_PER_CLIENT)) as u32);
            let (vx, vy) = (((r >> 32) % 11) as f32 - 5.0, ((r >> 40) % 11) as f32 - 5.0);
            match handle.submit(Work::Move { owner: who, vx, vy }) {
                Ok(()) => submitted += 1,
                Err(_) => refused += 1,
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let players = handle.read(move |db| db.table(player).len()).expect("tick thread");
    let metrics = handle.metrics();
    drop(handle.shutdown());
    let rows_changed = rows_changed.load(Ordering::Relaxed);

    let d = &metrics.tick_duration_us;
    println!("tickdb tick loop demo: {:.1} s, {players} players", started.elapsed().as_secs_f64());
    println!("work items submitted {submitted}, refused (inbox full) {refused}");
    println!(
        "ticks {}, transactions committed {}, rolled back {}, rows changed {rows_changed}",
        metrics.ticks, metrics.committed, metrics.rolled_back
    );
    println!(
        "tick duration µs: p50 {} p99 {} max {}",
        d.value_at_quantile(0.5),
        d.value_at_quantile(0.99),
        d.max()
    );
}

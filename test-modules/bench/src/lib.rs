//! Reducers for the host benchmarks: an empty one, an insert, and the issue's
//! `move_to` (find a player by identity, update its position).

use tickdb::{Identity, ReducerContext, Table, reducer, table};

#[table(accessor = player, public)]
#[derive(Debug)]
pub struct Player {
    #[primary_key]
    #[auto_inc]
    id: u64,
    #[unique]
    identity: Identity,
    #[index(btree)]
    zone: u32,
    x: f32,
    y: f32,
    name: String,
}

#[table(accessor = item, public)]
#[derive(Debug)]
pub struct Item {
    #[primary_key]
    #[auto_inc]
    id: u64,
    value: u64,
}

#[reducer]
pub fn empty(_ctx: &ReducerContext) {}

#[reducer]
pub fn insert_item(ctx: &ReducerContext, value: u64) {
    ctx.db.item().insert(Item { id: 0, value });
}

#[reducer]
pub fn join(ctx: &ReducerContext, name: String, zone: u32) -> Result<u64, String> {
    if ctx.db.player().identity().find(ctx.sender).is_some() {
        return Err("already joined".into());
    }
    let player = ctx.db.player().insert(Player { id: 0, identity: ctx.sender, zone, x: 0.0, y: 0.0, name });
    Ok(player.id)
}

#[reducer]
pub fn move_to(ctx: &ReducerContext, x: f32, y: f32) -> Result<(), String> {
    let mut p = ctx.db.player().identity().find(ctx.sender).ok_or("not joined")?;
    p.x = x;
    p.y = y;
    ctx.db.player().id().update(p);
    Ok(())
}

/// Makes `n` host calls (`row_count`), for the guest-to-host overhead.
#[reducer]
pub fn host_calls(ctx: &ReducerContext, n: u32) -> Result<u64, String> {
    let mut total = 0;
    for _ in 0..n {
        total += ctx.db.item().count();
    }
    Ok(total)
}

/// Inserts two items in one transaction (`2v` and `2v + 1`): a crash test checks that
/// no transaction is ever half there.
#[reducer]
pub fn insert_pair(ctx: &ReducerContext, value: u64) {
    ctx.db.item().insert(Item { id: 0, value: 2 * value });
    ctx.db.item().insert(Item { id: 0, value: 2 * value + 1 });
}

/// Rows the network benchmarks move every tick; `stamp` is the driver's clock when it
/// asked for the move, so that a client seeing the row knows how long it took.
#[table(accessor = mover, public)]
#[derive(Debug)]
pub struct Mover {
    #[primary_key]
    id: u64,
    #[index(btree)]
    zone: u32,
    x: f32,
    y: f32,
    stamp: u64,
}

/// Movers `0..count`, spread over `zones` zones.
#[reducer]
pub fn spawn_movers(ctx: &ReducerContext, count: u32, zones: u32) {
    for id in 0..count {
        ctx.db.mover().insert(Mover { id: u64::from(id), zone: id % zones.max(1), x: 0.0, y: 0.0, stamp: 0 });
    }
}

/// Moves movers `0..count` one step and stamps them.
#[reducer]
pub fn move_movers(ctx: &ReducerContext, count: u32, stamp: u64) {
    for id in 0..u64::from(count) {
        if let Some(mut m) = ctx.db.mover().id().find(id) {
            m.x += 1.0;
            m.y -= 1.0;
            m.stamp = stamp;
            ctx.db.mover().id().update(m);
        }
    }
}

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

#[table(accessor = item)]
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

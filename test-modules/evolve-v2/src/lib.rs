//! A game's module after an update, for the migration tests: to `tickdb-test-evolve`
//! it adds a table (declared first), two columns with defaults and an index to
//! `player`, makes `note` public, and adds reducers.

use tickdb::{ReducerContext, Table, reducer, table};

#[table(accessor = guild, public)]
#[derive(Debug)]
pub struct Guild {
    #[primary_key]
    #[auto_inc]
    id: u64,
    name: String,
}

#[table(accessor = player, public)]
#[derive(Debug)]
pub struct Player {
    #[primary_key]
    #[auto_inc]
    id: u64,
    #[index(btree)]
    name: String,
    #[default(1)]
    level: u32,
    #[default(Some("newcomer".to_string()))]
    title: Option<String>,
}

#[table(accessor = note, public)]
#[derive(Debug)]
pub struct Note {
    #[primary_key]
    id: u64,
    text: String,
}

#[reducer]
pub fn level_up(ctx: &ReducerContext, id: u64) -> Result<u32, String> {
    let player = ctx.db.player().id().find(id).ok_or(format!("no player {id}"))?;
    let level = player.level + 1;
    ctx.db.player().id().update(Player { level, ..player });
    Ok(level)
}

#[reducer]
pub fn found_guild(ctx: &ReducerContext, name: String) {
    ctx.db.guild().insert(Guild { id: 0, name });
}

#[reducer]
pub fn join(ctx: &ReducerContext, name: String) {
    let player = ctx.db.player().insert(Player { id: 0, name, level: 1, title: None });
    log::info!("player {} joined", player.id);
}

#[reducer]
pub fn write_note(ctx: &ReducerContext, id: u64, text: String) {
    ctx.db.note().insert(Note { id, text });
}

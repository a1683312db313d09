//! A game's module before an update, for the migration tests; `tickdb-test-evolve-v2`
//! is the same game after it.

use tickdb::{ReducerContext, Table, reducer, table};

#[table(accessor = player, public)]
#[derive(Debug)]
pub struct Player {
    #[primary_key]
    #[auto_inc]
    id: u64,
    name: String,
}

#[table(accessor = note)]
#[derive(Debug)]
pub struct Note {
    #[primary_key]
    id: u64,
    text: String,
}

#[reducer]
pub fn join(ctx: &ReducerContext, name: String) {
    ctx.db.player().insert(Player { id: 0, name });
}

#[reducer]
pub fn write_note(ctx: &ReducerContext, id: u64, text: String) {
    ctx.db.note().insert(Note { id, text });
}

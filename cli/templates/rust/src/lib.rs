//! A tickdb module: tables and the reducers that change them. Build and publish it
//! with `tickdb publish NAME`, or `tickdb dev` to republish on every change.

use tickdb::{ReducerContext, Table, reducer, table};

#[table(accessor = person, public)]
pub struct Person {
    #[primary_key]
    #[auto_inc]
    id: u64,
    name: String,
}

#[reducer]
pub fn add(ctx: &ReducerContext, name: String) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("names must not be empty".into());
    }
    ctx.db.person().insert(Person { id: 0, name });
    Ok(())
}

#[reducer]
pub fn say_hello(ctx: &ReducerContext) {
    for person in ctx.db.person().iter() {
        log::info!("Hello, {}!", person.name);
    }
    log::info!("Hello, World!");
}

use tickdb::{ReducerContext, tick};

#[tick]
pub fn physics(_ctx: &ReducerContext) {}

fn main() {}

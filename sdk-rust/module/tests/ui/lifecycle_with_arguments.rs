use tickdb::{ReducerContext, reducer};

#[reducer(init)]
pub fn init(_ctx: &ReducerContext, seed: u64) {
    let _ = seed;
}

fn main() {}

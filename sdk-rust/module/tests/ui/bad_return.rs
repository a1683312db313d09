use tickdb::{ReducerContext, reducer};

#[reducer]
pub fn count(_ctx: &ReducerContext) -> u64 {
    3
}

fn main() {}

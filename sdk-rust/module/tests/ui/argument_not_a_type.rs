use tickdb::{ReducerContext, reducer};

pub struct Order;

#[reducer]
pub fn place(_ctx: &ReducerContext, order: Order) {
    let _ = order;
}

fn main() {}

use tickdb::reducer;

#[reducer]
pub fn noop() {}

fn main() {}

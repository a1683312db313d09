use tickdb::table;

pub struct Position {
    pub x: f32,
}

#[table(accessor = player)]
pub struct Player {
    id: u64,
    pos: Position,
}

fn main() {}

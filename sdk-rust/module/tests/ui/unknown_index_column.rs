use tickdb::table;

#[table(accessor = player, index(name = pos, btree(columns = [x, z])))]
pub struct Player {
    x: f32,
    y: f32,
}

fn main() {}

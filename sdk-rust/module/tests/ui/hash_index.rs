use tickdb::table;

#[table(accessor = player)]
pub struct Player {
    #[index(hash)]
    zone: u32,
}

fn main() {}

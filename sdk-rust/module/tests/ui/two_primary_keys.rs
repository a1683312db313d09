use tickdb::table;

#[table(accessor = player)]
pub struct Player {
    #[primary_key]
    id: u64,
    #[primary_key]
    other: u64,
}

fn main() {}

use tickdb::table;

#[table(accessor = player)]
pub struct Player {
    #[primary_key]
    #[auto_inc]
    name: String,
}

fn main() {}

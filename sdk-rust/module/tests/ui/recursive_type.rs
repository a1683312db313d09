use tickdb::Type;

#[derive(Type)]
pub struct Node {
    value: u32,
    next: Option<Box<Node>>,
}

fn main() {}

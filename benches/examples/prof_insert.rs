use std::time::Instant;
use tickdb_benches::*;
fn main() {
    let n: usize = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(1_000_000);
    let rows = EncodedRows::of(&players(n));
    let (mut db, t) = empty_db();
    let mut tx = db.begin();
    let start = Instant::now();
    for row in rows.iter() {
        tx.insert(t, row).unwrap();
    }
    println!("insert {:?}", start.elapsed());
    std::mem::forget(tx);
}

//! Shared workload for the benchmarks: the player table of the storage targets,
//! `{id u64 pk, owner Identity, x f32, y f32, hp u32, name String(8..16)}`, generated
//! deterministically, and helpers to load it into tickdb and into the baselines.

use tickdb_engine::{Database, EngineConfig, TableId, Tx};
use tickdb_wasm_abi::{TableSchema, ValueType};

/// One player, as a plain Rust struct (the `Vec`-of-structs baseline stores these).
#[derive(Debug, Clone, PartialEq)]
pub struct Player {
    pub id: u64,
    pub owner: [u8; 32],
    pub x: f32,
    pub y: f32,
    pub hp: u32,
    pub name: String,
}

/// A deterministic pseudo-random sequence (SplitMix64), so every run uses the same data.
pub fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `n` players with ids `1..=n` in a shuffled order, unique owners, names of 8 to 16 chars.
pub fn players(n: usize) -> Vec<Player> {
    (0..n as u64)
        .map(|i| {
            let r = mix(i);
            let mut owner = [0u8; 32];
            owner[..8].copy_from_slice(&r.to_le_bytes());
            owner[8..16].copy_from_slice(&i.to_le_bytes());
            let name_len = 8 + (r % 9) as usize;
            let name: String = (0..name_len).map(|k| (b'a' + ((r >> (k * 3)) % 26) as u8) as char).collect();
            Player { id: i + 1, owner, x: (r % 10_000) as f32, y: ((r >> 20) % 10_000) as f32, hp: 100, name }
        })
        .collect()
}

/// Bytes of data in a player, counting the name's characters but not its length.
pub fn raw_bytes(players: &[Player]) -> usize {
    players.iter().map(|p| 8 + 32 + 4 + 4 + 4 + p.name.len()).sum()
}

pub fn player_schema() -> TableSchema {
    TableSchema::builder("player")
        .column("id", ValueType::U64)
        .column("owner", ValueType::Identity)
        .column("x", ValueType::F32)
        .column("y", ValueType::F32)
        .column("hp", ValueType::U32)
        .column("name", ValueType::String)
        .primary_key(["id"])
        .public()
        .build()
        .expect("valid schema")
}

/// Byte offsets of `x` and `y` in an encoded player row.
pub const X_OFFSET: usize = 40;
pub const Y_OFFSET: usize = 44;

/// Appends the value encoding of a player row, as a module would send it.
pub fn encode_player(p: &Player, out: &mut Vec<u8>) {
    out.extend_from_slice(&p.id.to_le_bytes());
    out.extend_from_slice(&p.owner);
    out.extend_from_slice(&p.x.to_le_bytes());
    out.extend_from_slice(&p.y.to_le_bytes());
    out.extend_from_slice(&p.hp.to_le_bytes());
    out.extend_from_slice(&(p.name.len() as u32).to_le_bytes());
    out.extend_from_slice(p.name.as_bytes());
}

/// Encoded rows in one buffer.
#[derive(Debug, Default)]
pub struct EncodedRows {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl EncodedRows {
    pub fn of(players: &[Player]) -> Self {
        let mut rows = EncodedRows::default();
        for p in players {
            encode_player(p, &mut rows.bytes);
            rows.ends.push(rows.bytes.len());
        }
        rows
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(self.ends.iter()).map(|(s, &e)| &self.bytes[s..e])
    }
}

/// An empty database with the player table.
pub fn empty_db() -> (Database, TableId) {
    let mut db = Database::new(EngineConfig::default()).expect("default config is valid");
    let t = db.create_table(player_schema()).expect("new table");
    (db, t)
}

/// A database holding `rows`, committed.
pub fn loaded_db(rows: &EncodedRows) -> (Database, TableId) {
    let (mut db, t) = empty_db();
    let mut tx = db.begin();
    for row in rows.iter() {
        tx.insert(t, row).expect("valid row");
    }
    tx.commit();
    (db, t)
}

/// The primary-key index key of a `u64` id, built from its encoding as a module sends it.
pub fn pk_key(db: &Database, t: TableId, id: u64) -> tickdb_engine::KeyBytes {
    let table = db.table(t);
    let pk = &table.schema().primary_key().expect("player has a primary key").columns;
    table.key_from_encoded(pk, &id.to_le_bytes()).expect("a u64 key")
}

/// The rollback benchmarks' transaction: one write per row of `new_rows` (1,000 of
/// them in the benchmarks) on random players of a loaded table with `rows` players:
/// four in ten update `x`, three delete, three insert a row of `new_rows`. `round`
/// picks which players, so that each round can touch rows not in cache.
pub fn mixed_writes(tx: &mut Tx<'_>, t: TableId, new_rows: &EncodedRows, rows: usize, round: u64) {
    let pk = tx.table(t).schema().primary_key.expect("player has a primary key");
    let mut row = Vec::new();
    for (i, new_row) in new_rows.iter().enumerate() {
        let id = mix(round * 1_000_003 + i as u64) % rows as u64 + 1;
        let Some(rid) = tx.table(t).find_unique_encoded(pk, &id.to_le_bytes()).expect("a u64 key") else {
            continue;
        };
        match i % 10 {
            0..=3 => {
                row.clear();
                tx.table(t).get(rid).expect("live").encode_into(&mut row);
                row[X_OFFSET] ^= 1;
                tx.update(t, rid, &row).expect("valid row");
            }
            4..=6 => tx.delete(t, rid).expect("live"),
            _ => drop(tx.insert(t, new_row).expect("a new id")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickdb_wasm_abi::{Identity, Value, encode_product};

    /// The hand-written benchmark encoder agrees with the generic value encoding.
    #[test]
    fn encode_player_matches_value_encoding() {
        let p = &players(3)[2];
        let mut fast = Vec::new();
        encode_player(p, &mut fast);
        let values = vec![
            Value::U64(p.id),
            Value::Identity(Identity(p.owner)),
            Value::F32(p.x),
            Value::F32(p.y),
            Value::U32(p.hp),
            Value::string(p.name.as_str()),
        ];
        let mut generic = Vec::new();
        encode_product(player_schema().column_types(), &values, &mut generic).unwrap();
        assert_eq!(fast, generic);
        assert_eq!(&fast[X_OFFSET..X_OFFSET + 4], &p.x.to_le_bytes());
    }

    /// Loading rows and reading them back by primary key gives the same rows.
    #[test]
    fn loaded_db_finds_rows_by_key() {
        let ps = players(1000);
        let (db, t) = loaded_db(&EncodedRows::of(&ps));
        let pk = db.table(t).schema().primary_key.unwrap();
        for p in &ps {
            let row = db.table(t).find_unique(pk, &pk_key(&db, t, p.id)).unwrap();
            let mut bytes = Vec::new();
            encode_player(p, &mut bytes);
            assert_eq!(db.table(t).get(row).unwrap().to_bytes(), bytes);
        }
    }
}

/// A global allocator that counts, for the benchmarks that measure memory: the bytes
/// live and the allocations made (reallocations included). A benchmark binary
/// installs it with `#[global_allocator] static A: Counting = Counting;`.
#[derive(Debug)]
pub struct Counting;

/// Bytes allocated and not yet freed, through [`Counting`].
pub static LIVE_BYTES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// Allocations and reallocations made through [`Counting`].
pub static ALLOCATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[allow(unsafe_code, reason = "a counting global allocator must implement the unsafe GlobalAlloc trait")]
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::Ordering::Relaxed;

    use super::{ALLOCATIONS, Counting, LIVE_BYTES};

    // SAFETY: every method forwards to the system allocator with the caller's arguments
    // unchanged, so the system allocator's guarantees carry over; the counters only observe.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            LIVE_BYTES.fetch_add(layout.size(), Relaxed);
            ALLOCATIONS.fetch_add(1, Relaxed);
            // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
            unsafe { System.alloc(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            LIVE_BYTES.fetch_sub(layout.size(), Relaxed);
            // SAFETY: forwarded unchanged; the caller upholds `dealloc`'s contract.
            unsafe { System.dealloc(ptr, layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            LIVE_BYTES.fetch_add(new_size, Relaxed);
            LIVE_BYTES.fetch_sub(layout.size(), Relaxed);
            ALLOCATIONS.fetch_add(1, Relaxed);
            // SAFETY: forwarded unchanged; the caller upholds `realloc`'s contract.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }
}

//! A module that misbehaves on purpose: each reducer breaks one of the host's limits
//! or the ABI, so the tests can check that the call fails cleanly, rolls back, and
//! leaves the database and the other calls alone. `bump` is the well-behaved control.
#![allow(unsafe_code)]

use tickdb::{ReducerContext, Table, reducer, table};

#[table(accessor = counter, public)]
#[derive(Debug)]
pub struct Counter {
    #[primary_key]
    id: u32,
    value: u64,
}

#[table(accessor = blob)]
#[derive(Debug)]
pub struct Blob {
    #[primary_key]
    #[auto_inc]
    id: u64,
    data: String,
}

/// The well-behaved control: adds one to counter `id`.
#[reducer]
pub fn bump(ctx: &ReducerContext, id: u32) {
    match ctx.db.counter().id().find(id) {
        Some(c) => {
            ctx.db.counter().id().update(Counter { value: c.value + 1, ..c });
        }
        None => {
            ctx.db.counter().insert(Counter { id, value: 1 });
        }
    }
}

/// Writes, then loops forever: the deadline must stop it and the write roll back.
#[reducer]
pub fn spin(ctx: &ReducerContext) {
    bump(ctx, 0);
    let mut i = 0u64;
    loop {
        i = std::hint::black_box(i.wrapping_add(1));
    }
}

/// Allocates without end.
#[reducer]
pub fn hoard(ctx: &ReducerContext) {
    bump(ctx, 0);
    let mut kept: Vec<Vec<u8>> = Vec::new();
    loop {
        kept.push(vec![1u8; 1 << 20]);
        std::hint::black_box(&kept);
    }
}

/// Recursion that keeps everything in wasm locals: it exhausts the wasm stack.
#[inline(never)]
fn deep(n: u64, a: u64, b: u64, c: u64) -> u64 {
    if n == 0 {
        return a ^ b ^ c;
    }
    let r = deep(n - 1, b.rotate_left(1), c ^ n, a.wrapping_add(n));
    r.wrapping_mul(3).wrapping_add(a)
}

/// Recurses past the wasm stack limit.
#[reducer]
pub fn overflow(ctx: &ReducerContext) {
    bump(ctx, 0);
    std::hint::black_box(deep(u64::MAX, 1, 2, 3));
}

/// Recursion with arrays in memory: it exhausts the shadow stack that Rust keeps in
/// linear memory, which ends below address zero.
#[inline(never)]
fn deep_in_memory(n: u64) -> u64 {
    let pad = std::hint::black_box([n; 64]);
    if n == 0 { pad[3] } else { deep_in_memory(n - 1).wrapping_add(pad[7]) }
}

#[reducer]
pub fn overflow_shadow(ctx: &ReducerContext) {
    bump(ctx, 0);
    std::hint::black_box(deep_in_memory(u64::MAX));
}

#[reducer]
pub fn panics(ctx: &ReducerContext) {
    bump(ctx, 0);
    panic!("the dragon ate the save file");
}

#[reducer]
pub fn fails(ctx: &ReducerContext) -> Result<(), String> {
    bump(ctx, 0);
    Err("not enough gold".into())
}

#[cfg(target_arch = "wasm32")]
mod raw {
    #[link(wasm_import_module = "tickdb_1")]
    unsafe extern "C" {
        pub fn insert(table: u32, row: *mut u8, row_len: u32) -> i32;
        pub fn table_id(name: *const u8, name_len: u32, out: *mut u32) -> i32;
    }
}

#[cfg(target_arch = "wasm32")]
fn counter_table() -> u32 {
    let mut id = 0;
    let name = "counter";
    // SAFETY: valid pointers to a live string and a local.
    let status = unsafe { raw::table_id(name.as_ptr(), name.len() as u32, &mut id) };
    assert_eq!(status, 0);
    id
}

/// Passes a pointer far outside its memory: the host must trap the call, not crash.
#[cfg(target_arch = "wasm32")]
#[reducer]
pub fn bad_pointer(ctx: &ReducerContext) {
    bump(ctx, 0);
    // SAFETY: deliberately invalid for the host to reject; the module never reads it.
    unsafe { raw::insert(counter_table(), 0xFFFF_0000usize as *mut u8, 4096) };
}

/// Sends bytes that are not a row; returns the status the host gave.
#[cfg(target_arch = "wasm32")]
#[reducer]
pub fn bad_row(_ctx: &ReducerContext) -> Result<i32, String> {
    let mut junk = [0xFFu8; 3];
    // SAFETY: a valid buffer of 3 bytes.
    Ok(unsafe { raw::insert(counter_table(), junk.as_mut_ptr(), junk.len() as u32) })
}

/// Writes to a table id that does not exist; returns the status the host gave.
#[cfg(target_arch = "wasm32")]
#[reducer]
pub fn unknown_table(_ctx: &ReducerContext) -> Result<i32, String> {
    let mut row = [0u8; 12];
    // SAFETY: a valid buffer of 12 bytes.
    Ok(unsafe { raw::insert(9999, row.as_mut_ptr(), row.len() as u32) })
}

/// Inserts a row of `bytes` bytes: past the host's row limit it must be refused.
#[reducer]
pub fn huge_row(ctx: &ReducerContext, bytes: u32) -> Result<(), String> {
    let data = "x".repeat(bytes as usize);
    ctx.db.blob().try_insert(Blob { id: 0, data }).map(|_| ()).map_err(|e| e.to_string())
}

/// Scans every blob: past the host's budget for iterator rows, the scan is refused.
#[reducer]
pub fn scan_blobs(ctx: &ReducerContext) -> Result<u64, String> {
    Ok(ctx.db.blob().iter().count() as u64)
}

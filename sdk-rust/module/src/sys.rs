//! The host functions of ABI version 1 (`wasm-abi/README.md`), with safe wrappers.
//!
//! On targets other than wasm32 the functions do not exist: a module only runs inside
//! the tickdb host. There the wrappers panic with a message saying so, which lets the
//! crate (and modules using it) build and unit-test on the host target.
#![allow(unsafe_code)]

use tickdb_wasm_abi::abi::Errno;

#[cfg(target_arch = "wasm32")]
mod raw {
    #[link(wasm_import_module = "tickdb_1")]
    unsafe extern "C" {
        pub fn table_id(name: *const u8, name_len: u32, out: *mut u32) -> i32;
        pub fn index_id(table: u32, name: *const u8, name_len: u32, out: *mut u32) -> i32;
        pub fn row_count(table: u32, out: *mut u64) -> i32;
        pub fn insert(table: u32, row: *mut u8, row_len: u32) -> i32;
        pub fn update(table: u32, index: u32, row: *const u8, row_len: u32) -> i32;
        pub fn delete_by_key(table: u32, index: u32, key: *const u8, key_len: u32, out: *mut u32) -> i32;
        pub fn delete_row(table: u32, row: *const u8, row_len: u32, out: *mut u32) -> i32;
        pub fn find(
            table: u32,
            index: u32,
            key: *const u8,
            key_len: u32,
            buf: *mut u8,
            buf_len: *mut u32,
        ) -> i32;
        pub fn iter_table(table: u32, out: *mut u32) -> i32;
        pub fn iter_key(table: u32, index: u32, key: *const u8, key_len: u32, out: *mut u32) -> i32;
        pub fn iter_range(table: u32, index: u32, bounds: *const u8, bounds_len: u32, out: *mut u32) -> i32;
        pub fn iter_next(iter: u32, buf: *mut u8, buf_len: *mut u32) -> i32;
        pub fn iter_drop(iter: u32) -> i32;
        pub fn call_args_read(buf: *mut u8) -> i32;
        pub fn call_return(value: *const u8, len: u32) -> i32;
        pub fn call_error(message: *const u8, len: u32) -> i32;
        pub fn describe_write(def: *const u8, len: u32) -> i32;
        pub fn last_error(buf: *mut u8, buf_len: *mut u32) -> i32;
        pub fn log(
            level: u32,
            target: *const u8,
            target_len: u32,
            message: *const u8,
            message_len: u32,
        ) -> i32;
    }
}

#[cfg(not(target_arch = "wasm32"))]
#[allow(clippy::missing_safety_doc)]
mod raw {
    macro_rules! outside_host {
        ($($name:ident($($arg:ident: $ty:ty),*);)*) => {$(
            pub unsafe fn $name($(_: $ty),*) -> i32 {
                panic!("tickdb modules run only inside the tickdb host; build for wasm32-unknown-unknown")
            }
        )*};
    }
    outside_host! {
        table_id(name: *const u8, name_len: u32, out: *mut u32);
        index_id(table: u32, name: *const u8, name_len: u32, out: *mut u32);
        row_count(table: u32, out: *mut u64);
        insert(table: u32, row: *mut u8, row_len: u32);
        update(table: u32, index: u32, row: *const u8, row_len: u32);
        delete_by_key(table: u32, index: u32, key: *const u8, key_len: u32, out: *mut u32);
        delete_row(table: u32, row: *const u8, row_len: u32, out: *mut u32);
        find(table: u32, index: u32, key: *const u8, key_len: u32, buf: *mut u8, buf_len: *mut u32);
        iter_table(table: u32, out: *mut u32);
        iter_key(table: u32, index: u32, key: *const u8, key_len: u32, out: *mut u32);
        iter_range(table: u32, index: u32, bounds: *const u8, bounds_len: u32, out: *mut u32);
        iter_next(iter: u32, buf: *mut u8, buf_len: *mut u32);
        iter_drop(iter: u32);
        call_args_read(buf: *mut u8);
        call_return(value: *const u8, len: u32);
        call_error(message: *const u8, len: u32);
        describe_write(def: *const u8, len: u32);
        last_error(buf: *mut u8, buf_len: *mut u32);
        log(level: u32, target: *const u8, target_len: u32, message: *const u8, message_len: u32);
    }
}

/// A host call's status: `Ok` for 0, the errno otherwise.
fn status(code: i32) -> Result<(), Errno> {
    match code {
        0 => Ok(()),
        // A code this SDK does not know is still a failure; report it as the closest.
        code => Err(Errno::from_code(code).unwrap_or(Errno::InvalidRow)),
    }
}

fn len(bytes: &[u8]) -> u32 {
    u32::try_from(bytes.len()).expect("wasm32 buffers are smaller than 4 GiB")
}

// SAFETY (for every call below): each pointer comes from a live Rust slice or local
// of the stated length, which the host reads or writes only within those bounds
// and only for the duration of the call.

pub(crate) fn table_id(name: &str) -> Result<u32, Errno> {
    let mut out = 0;
    // SAFETY: pointers and lengths of live slices and locals; see above.
    status(unsafe { raw::table_id(name.as_ptr(), len(name.as_bytes()), &mut out) })?;
    Ok(out)
}

pub(crate) fn index_id(table: u32, name: &str) -> Result<u32, Errno> {
    let mut out = 0;
    // SAFETY: pointers and lengths of live slices and locals; see above.
    status(unsafe { raw::index_id(table, name.as_ptr(), len(name.as_bytes()), &mut out) })?;
    Ok(out)
}

pub(crate) fn row_count(table: u32) -> Result<u64, Errno> {
    let mut out = 0;
    // SAFETY: pointers and lengths of live slices and locals; see above.
    status(unsafe { raw::row_count(table, &mut out) })?;
    Ok(out)
}

/// Inserts; auto-inc columns are filled in `row` in place.
pub(crate) fn insert(table: u32, row: &mut [u8]) -> Result<(), Errno> {
    // SAFETY: pointers and lengths of live slices and locals; see above.
    status(unsafe { raw::insert(table, row.as_mut_ptr(), len(row)) })
}

pub(crate) fn update(table: u32, index: u32, row: &[u8]) -> Result<(), Errno> {
    // SAFETY: pointers and lengths of live slices and locals; see above.
    status(unsafe { raw::update(table, index, row.as_ptr(), len(row)) })
}

pub(crate) fn delete_by_key(table: u32, index: u32, key: &[u8]) -> Result<u32, Errno> {
    let mut out = 0;
    // SAFETY: pointers and lengths of live slices and locals; see above.
    status(unsafe { raw::delete_by_key(table, index, key.as_ptr(), len(key), &mut out) })?;
    Ok(out)
}

pub(crate) fn delete_row(table: u32, row: &[u8]) -> Result<u32, Errno> {
    let mut out = 0;
    // SAFETY: pointers and lengths of live slices and locals; see above.
    status(unsafe { raw::delete_row(table, row.as_ptr(), len(row), &mut out) })?;
    Ok(out)
}

/// Writes the row with `key` in unique index `index` into `buf`; returns its size, or
/// the size needed with `BufferTooSmall`.
pub(crate) fn find(table: u32, index: u32, key: &[u8], buf: &mut [u8]) -> Result<usize, (Errno, usize)> {
    let mut size = len(buf);
    // SAFETY: pointers and lengths of live slices and locals; see above.
    let code = unsafe { raw::find(table, index, key.as_ptr(), len(key), buf.as_mut_ptr(), &mut size) };
    status(code).map(|()| size as usize).map_err(|e| (e, size as usize))
}

pub(crate) fn iter_table(table: u32) -> Result<u32, Errno> {
    let mut out = 0;
    // SAFETY: pointers and lengths of live slices and locals; see above.
    status(unsafe { raw::iter_table(table, &mut out) })?;
    Ok(out)
}

pub(crate) fn iter_key(table: u32, index: u32, key: &[u8]) -> Result<u32, Errno> {
    let mut out = 0;
    // SAFETY: pointers and lengths of live slices and locals; see above.
    status(unsafe { raw::iter_key(table, index, key.as_ptr(), len(key), &mut out) })?;
    Ok(out)
}

pub(crate) fn iter_range(table: u32, index: u32, bounds: &[u8]) -> Result<u32, Errno> {
    let mut out = 0;
    // SAFETY: pointers and lengths of live slices and locals; see above.
    status(unsafe { raw::iter_range(table, index, bounds.as_ptr(), len(bounds), &mut out) })?;
    Ok(out)
}

/// Fills `buf` (its whole length) with rows; returns the bytes used, or the size the
/// next row needs with `BufferTooSmall`.
pub(crate) fn iter_next(iter: u32, buf: &mut [u8]) -> Result<usize, (Errno, usize)> {
    let mut used = len(buf);
    // SAFETY: pointers and lengths of live slices and locals; see above.
    let code = unsafe { raw::iter_next(iter, buf.as_mut_ptr(), &mut used) };
    status(code).map(|()| used as usize).map_err(|e| (e, used as usize))
}

pub(crate) fn iter_drop(iter: u32) {
    // Only fails for an unknown id, which the SDK never passes.
    // SAFETY: pointers and lengths of live slices and locals; see above.
    let _ = unsafe { raw::iter_drop(iter) };
}

pub(crate) fn call_args_read(buf: &mut [u8]) -> Result<(), Errno> {
    // SAFETY: pointers and lengths of live slices and locals; see above.
    status(unsafe { raw::call_args_read(buf.as_mut_ptr()) })
}

pub(crate) fn call_return(value: &[u8]) -> Result<(), Errno> {
    // SAFETY: pointers and lengths of live slices and locals; see above.
    status(unsafe { raw::call_return(value.as_ptr(), len(value)) })
}

pub(crate) fn call_error(message: &str) {
    // SAFETY: pointers and lengths of live slices and locals; see above.
    let _ = unsafe { raw::call_error(message.as_ptr(), len(message.as_bytes())) };
}

pub(crate) fn describe_write(def: &[u8]) {
    // SAFETY: pointers and lengths of live slices and locals; see above.
    let _ = unsafe { raw::describe_write(def.as_ptr(), len(def)) };
}

/// The host's message for the last failed call.
pub(crate) fn last_error() -> String {
    let mut buf = vec![0u8; 256];
    loop {
        let mut size = len(&buf);
        // SAFETY: pointers and lengths of live slices and locals; see above.
        match status(unsafe { raw::last_error(buf.as_mut_ptr(), &mut size) }) {
            Ok(()) => {
                buf.truncate(size as usize);
                return String::from_utf8_lossy(&buf).into_owned();
            }
            Err(Errno::BufferTooSmall) => buf.resize(size as usize, 0),
            Err(e) => return e.name().to_string(),
        }
    }
}

pub(crate) fn log(level: u32, target: &str, message: &str) {
    let (t, m) = (target.as_bytes(), message.as_bytes());
    // SAFETY: pointers and lengths of live slices and locals; see above.
    let _ = unsafe { raw::log(level, t.as_ptr(), len(t), m.as_ptr(), len(m)) };
}

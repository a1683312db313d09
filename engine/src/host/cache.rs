//! Compiling modules, and the cache of compiled artefacts that lets a restarted server
//! skip compilation.
//!
//! An artefact is named by the SHA-256 of the module's bytes and by wasmtime's
//! compatibility hash of the engine's settings, so a different module, wasmtime version
//! or configuration simply misses. The file holds a magic number, the SHA-256 of the
//! artefact and the artefact. Loading native code from a file is only as safe as the
//! file: the checksum is verified before wasmtime sees a byte, and a file that fails it
//! is recompiled and replaced. Files are written to a temporary name and renamed into
//! place, so a crash never leaves a half-written artefact under the real name.
#![allow(unsafe_code)]

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::{Engine, Module};

use super::ModuleError;

const MAGIC: &[u8; 8] = b"TKDBCWM1";

pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A compiled module, and how it was had.
pub(crate) struct Compiled {
    pub(crate) module: Module,
    pub(crate) from_cache: bool,
    /// Why the artefact could not be cached, if it could not: the module still loads.
    pub(crate) cache_error: Option<String>,
}

/// Compiles `wasm`, or loads its artefact from `dir`.
pub(crate) fn compile(
    engine: &Engine,
    dir: Option<&Path>,
    hash: &[u8; 32],
    wasm: &[u8],
) -> Result<Compiled, ModuleError> {
    let compiled = |from_cache, cache_error| move |module| Compiled { module, from_cache, cache_error };
    let Some(dir) = dir else {
        let module = Module::new(engine, wasm).map_err(|e| ModuleError::Invalid(format!("{e:#}")))?;
        return Ok(compiled(false, None)(module));
    };
    let path = artefact_path(engine, dir, hash);
    if let Some(module) = load(engine, &path) {
        return Ok(compiled(true, None)(module));
    }
    let module = Module::new(engine, wasm).map_err(|e| ModuleError::Invalid(format!("{e:#}")))?;
    let stored = module.serialize().map_err(|e| format!("serializing: {e}")).and_then(|artefact| {
        store(dir, &path, &artefact).map_err(|e| format!("writing {}: {e}", path.display()))
    });
    Ok(compiled(false, stored.err())(module))
}

fn artefact_path(engine: &Engine, dir: &Path, hash: &[u8; 32]) -> PathBuf {
    let mut hasher = std::hash::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    dir.join(format!("{}-{:016x}.cwasm", hex(hash), hasher.finish()))
}

/// The cached module at `path`, if there is one whose checksum holds.
fn load(engine: &Engine, path: &Path) -> Option<Module> {
    let file = std::fs::read(path).ok()?;
    let (magic, rest) = file.split_at_checked(MAGIC.len())?;
    let (sum, artefact) = rest.split_at_checked(32)?;
    if magic != MAGIC || sum != sha256(artefact) {
        return None;
    }
    // SAFETY: wasmtime requires that deserialized bytes were produced by
    // `Module::serialize` of a compatible engine and not altered since. The file name
    // carries the engine's compatibility hash, and the SHA-256 just checked proves these
    // are exactly the bytes `store` wrote after serializing; wasmtime also checks its
    // own header and version before using them.
    unsafe { Module::deserialize(engine, artefact) }.ok()
}

fn store(dir: &Path, path: &Path, artefact: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    // A name of its own per writer, so two loads of one module never share a file.
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(MAGIC)?;
    file.write_all(&sha256(artefact))?;
    file.write_all(artefact)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

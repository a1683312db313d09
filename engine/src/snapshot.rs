//! Snapshots: every table's rows at the end of one tick, so that a restart loads them
//! and replays only the log after that tick.
//!
//! ```text
//! "TDBSNAP1"                     magic, 8 bytes
//! tick u64                       the last tick the snapshot holds
//! next_tx u64                    the log's transaction offset after that tick
//! schemas u32 + bytes            the tables' schemas (the module definition encoding)
//! per table, in id order:
//!   sequences u32, then u128 each    the auto-inc sequences' next values
//!   rows u64, then per row u32 length + the row's value encoding
//! crc u32                        CRC32C of everything before it
//! ```
//!
//! A snapshot is captured between ticks on the tick thread (a copy of the rows into
//! one buffer) and written by another thread: to a temporary file, synced, renamed
//! into place, and the directory synced, so a crash leaves either the whole snapshot
//! or none. Loading checks the checksum before using a byte, and the schemas against
//! the database's.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use tickdb_wasm_abi::ModuleDef;

use crate::commitlog::writer::LogWatch;
use crate::db::Database;
use crate::error::Error;
use crate::ids::TableId;

pub const SNAPSHOT_MAGIC: [u8; 8] = *b"TDBSNAP1";
const SUFFIX: &str = "tdbsnap";

/// Why a snapshot could not be written or used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{} is not a valid snapshot at offset {offset}: {why}", path.display())]
    Corrupt { path: PathBuf, offset: u64, why: String },
    #[error("{}: loading its rows: {source}", path.display())]
    Load { path: PathBuf, source: Error },
}

/// A snapshot's file name for its tick.
pub fn snapshot_name(tick: u64) -> String {
    format!("{tick:020}.{SUFFIX}")
}

/// The snapshots in `dir`, newest first.
pub fn list_snapshots(dir: &Path) -> Result<Vec<(u64, PathBuf)>, SnapshotError> {
    let io_error = |source| SnapshotError::Io { path: dir.to_path_buf(), source };
    let mut found = Vec::new();
    if !dir.exists() {
        return Ok(found);
    }
    for entry in std::fs::read_dir(dir).map_err(io_error)? {
        let path = entry.map_err(io_error)?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if let Some(tick) = name.strip_suffix(&format!(".{SUFFIX}")).and_then(|t| t.parse::<u64>().ok()) {
            found.push((tick, path));
        }
    }
    found.sort_by(|a, b| b.cmp(a));
    Ok(found)
}

/// Copies the database's state into a snapshot's bytes, with the tick it is at.
/// Runs between ticks.
pub fn capture(db: &Database) -> (u64, Vec<u8>) {
    let (tick, next_tx) = (db.last_tick().unwrap_or(0), db.next_tx());
    let mut out = Vec::new();
    out.extend_from_slice(&SNAPSHOT_MAGIC);
    out.extend_from_slice(&tick.to_le_bytes());
    out.extend_from_slice(&next_tx.to_le_bytes());
    let schemas =
        ModuleDef { tables: db.tables().map(|t| (**t.schema()).clone()).collect(), ..ModuleDef::default() };
    let schemas = schemas.encode();
    out.extend_from_slice(&(schemas.len() as u32).to_le_bytes());
    out.extend_from_slice(&schemas);
    let mut row = Vec::new();
    for table in db.tables() {
        let sequences = table.sequence_positions();
        out.extend_from_slice(&(sequences.len() as u32).to_le_bytes());
        sequences.iter().for_each(|s| out.extend_from_slice(&s.to_le_bytes()));
        out.extend_from_slice(&(table.len() as u64).to_le_bytes());
        for r in table.iter() {
            row.clear();
            r.encode_into(&mut row);
            out.extend_from_slice(&(row.len() as u32).to_le_bytes());
            out.extend_from_slice(&row);
        }
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    (tick, out)
}

/// Writes captured bytes as the snapshot of `tick` in `dir`, atomically.
pub fn install(dir: &Path, tick: u64, bytes: &[u8]) -> Result<PathBuf, SnapshotError> {
    let path = dir.join(snapshot_name(tick));
    let io_error = |source| SnapshotError::Io { path: path.clone(), source };
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(io_error)?;
        // The new directory's own entry must be durable too.
        if let Some(parent) = dir.parent() {
            File::open(parent).and_then(|d| d.sync_all()).map_err(io_error)?;
        }
    }
    // A name of its own per writer: a requested and an automatic snapshot of one tick
    // never share a temporary file.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    let mut file = File::create(&tmp).map_err(io_error)?;
    file.write_all(bytes).map_err(io_error)?;
    file.sync_all().map_err(io_error)?;
    std::fs::rename(&tmp, &path).map_err(io_error)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error)?;
    Ok(path)
}

/// What a loaded snapshot covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loaded {
    pub tick: u64,
    pub next_tx: u64,
    pub rows: u64,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        match self.at.checked_add(n).filter(|&end| end <= self.bytes.len()) {
            Some(end) => {
                let out = &self.bytes[self.at..end];
                self.at = end;
                Ok(out)
            }
            None => Err(self.corrupt("the snapshot ends too soon")),
        }
    }

    fn corrupt(&self, why: &str) -> SnapshotError {
        SnapshotError::Corrupt { path: self.path.to_path_buf(), offset: self.at as u64, why: why.into() }
    }

    fn u32(&mut self) -> Result<u32, SnapshotError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64, SnapshotError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
}

/// The transaction offset a snapshot's header gives (the log's position after its
/// tick), without loading or checking the rest; `None` if the header is unreadable.
pub fn next_tx_of(path: &Path) -> Option<u64> {
    use std::io::Read;
    let mut head = [0u8; 24];
    std::fs::File::open(path).ok()?.read_exact(&mut head).ok()?;
    (head[..8] == SNAPSHOT_MAGIC).then(|| u64::from_le_bytes(head[16..24].try_into().expect("8 bytes")))
}

/// Loads the snapshot at `path` into `db`, whose tables must be empty and have the
/// snapshot's schemas.
pub fn load(path: &Path, db: &mut Database) -> Result<Loaded, SnapshotError> {
    let bytes =
        std::fs::read(path).map_err(|source| SnapshotError::Io { path: path.to_path_buf(), source })?;
    let corrupt = |offset: usize, why: &str| SnapshotError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        why: why.into(),
    };
    if bytes.len() < SNAPSHOT_MAGIC.len() + 4 || bytes[..8] != SNAPSHOT_MAGIC {
        return Err(corrupt(0, "not a tickdb snapshot (bad magic)"));
    }
    let body = bytes.len() - 4;
    let crc = u32::from_le_bytes(bytes[body..].try_into().expect("4 bytes"));
    if crc32c::crc32c(&bytes[..body]) != crc {
        return Err(corrupt(body, "the checksum does not match the contents"));
    }
    let mut c = Cursor { bytes: &bytes[..body], at: 8, path };
    let tick = c.u64()?;
    let next_tx = c.u64()?;
    let schemas_len = c.u32()? as usize;
    let schemas_at = c.at;
    let schemas = ModuleDef::decode(c.take(schemas_len)?).map_err(|e| corrupt(schemas_at, &e.to_string()))?;
    let ours: Vec<_> = db.tables().map(|t| (**t.schema()).clone()).collect();
    if schemas.tables != ours {
        return Err(corrupt(schemas_at, "its tables' schemas differ from the database's"));
    }
    let mut rows = 0;
    let tables = db.tables().len();
    let mut positions = Vec::with_capacity(tables);
    let mut tx = db.begin();
    for table in 0..tables {
        let table = TableId(table as u32);
        let sequences: Vec<u128> = (0..c.u32()?)
            .map(|_| Ok(u128::from_le_bytes(c.take(16)?.try_into().expect("16 bytes"))))
            .collect::<Result<_, SnapshotError>>()?;
        for _ in 0..c.u64()? {
            let len = c.u32()? as usize;
            let row = c.take(len)?;
            tx.insert_exact(table, row)
                .map_err(|source| SnapshotError::Load { path: path.to_path_buf(), source })?;
            rows += 1;
        }
        positions.push((table, sequences));
    }
    if c.at != body {
        return Err(c.corrupt("bytes after the last table"));
    }
    // Only now that every row loaded: a failed load rolls back to empty tables.
    for (table, sequences) in &positions {
        tx.advance_sequences(*table, sequences);
    }
    tx.commit_quietly();
    db.set_log_position(tick, next_tx);
    Ok(Loaded { tick, next_tx, rows })
}

/// Takes a snapshot of a running database: captured between ticks on its tick thread,
/// written on the calling thread once `log` holds its tick (a snapshot past the log
/// could not be continued after a crash). Returns its tick and file.
pub fn take<W: Send + 'static>(
    handle: &crate::tick::TickHandle<W>,
    log: &LogWatch,
    dir: &Path,
) -> Result<(u64, PathBuf), SnapshotError> {
    let error =
        |why: String| SnapshotError::Io { path: dir.to_path_buf(), source: std::io::Error::other(why) };
    let (tick, bytes) =
        handle.read(capture).map_err(|e| error(format!("the database did not answer: {e}")))?;
    if tick > 0 {
        log.wait_durable(tick).map_err(|e| error(format!("the log did not reach tick {tick}: {e}")))?;
    }
    Ok((tick, install(dir, tick, &bytes)?))
}

/// Copies a running database to `dest` as a directory it can be recovered from: a new
/// snapshot in `dest/snapshots` and the log segments in `dest/log`. The snapshot alone
/// is consistent; the log copied with it carries the database further (a tick being
/// written as it is copied is cut off as a torn tail when the copy is recovered).
pub fn backup<W: Send + 'static>(
    handle: &crate::tick::TickHandle<W>,
    watch: &LogWatch,
    log: &Path,
    dest: &Path,
) -> Result<(u64, PathBuf), SnapshotError> {
    let snapshot = take(handle, watch, &dest.join("snapshots"))?;
    let dest_log = dest.join("log");
    let io_error = |path: &Path, source| SnapshotError::Io { path: path.to_path_buf(), source };
    std::fs::create_dir_all(&dest_log).map_err(|e| io_error(&dest_log, e))?;
    let segments = crate::commitlog::segments::list_segments(log)
        .map_err(|e| io_error(log, std::io::Error::other(e.to_string())))?;
    for (_, path) in segments {
        let to = dest_log.join(path.file_name().expect("segments have names"));
        std::fs::copy(&path, &to).map_err(|e| io_error(&path, e))?;
        File::open(&to).and_then(|f| f.sync_all()).map_err(|e| io_error(&to, e))?;
    }
    File::open(&dest_log).and_then(|d| d.sync_all()).map_err(|e| io_error(&dest_log, e))?;
    Ok(snapshot)
}

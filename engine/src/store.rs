//! A server's data directory: every database's name, owner and module, its snapshots
//! and its commit log, so that a restarted server brings each database back with no
//! action from the user.
//!
//! ```text
//! DATA/databases/NAME/database   name, owner, module hash, table order, checksummed
//! DATA/databases/NAME/module-HASH.wasm
//! DATA/databases/NAME/snapshots/
//! DATA/databases/NAME/log/
//! DATA/module-cache/             compiled modules
//! ```
//!
//! Every file is written to a temporary name, synced, renamed into place and the
//! directory synced.
//!
//! A database's module is replaced in place by a migration ([`DataDir::migrate`]):
//! the new module's file and a snapshot of the migrated tables are written first,
//! then the record names the new module and the snapshot's tick. A crash before the
//! record is written leaves the old module in charge (the snapshot does not match
//! its tables and is set aside); after it, recovery starts from that snapshot, since
//! older snapshots and log records hold rows of the old tables.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tickdb_wasm_abi::Identity;

use crate::config::EngineConfig;
use crate::db::Database;
use crate::durability::{RecoverError, Recovered, recover_from};
use crate::host::{LoadedModule, ModuleError, ModuleHost, ModuleSystem};
use crate::tick::{Clock, Entropy, Ticker};

const META_MAGIC: &[u8; 8] = b"TDBMETA2";
/// The record before migrations (no table order); its module is `module.wasm`.
const META_MAGIC_V1: &[u8; 8] = b"TDBMETA1";

/// Why the data directory could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{} is damaged: {why}", path.display())]
    Corrupt { path: PathBuf, why: String },
    #[error("a database named `{0}` already exists")]
    Exists(String),
    #[error("database name `{0}` is invalid: use letters, digits, `-` and `_`, at most 64")]
    InvalidName(String),
    #[error("database `{name}`: {source}")]
    Module { name: String, source: ModuleError },
    #[error("database `{name}`: {source}")]
    Recover { name: String, source: Box<RecoverError> },
}

/// What the store keeps about a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseMeta {
    pub name: String,
    pub owner: Identity,
    /// SHA-256 of the module's wasm.
    pub module_hash: [u8; 32],
    /// The tick of the last migration's snapshot, the first state of the database
    /// with this module's tables; 0 if never migrated.
    pub migrated_at: u64,
    /// The table names in id order; empty until a migration, meaning the module's
    /// order.
    pub tables: Vec<String>,
}

/// A server's data directory; see the module docs.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_path_buf(), source }
}

/// Writes `bytes` to `path` atomically and durably.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().expect("files live in directories");
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    file.write_all(bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn module_cache(&self) -> PathBuf {
        self.root.join("module-cache")
    }

    pub fn database_dir(&self, name: &str) -> PathBuf {
        self.root.join("databases").join(name)
    }

    pub fn snapshots(&self, name: &str) -> PathBuf {
        self.database_dir(name).join("snapshots")
    }

    pub fn log(&self, name: &str) -> PathBuf {
        self.database_dir(name).join("log")
    }

    /// Records a new database: its module and who owns it.
    pub fn create(&self, name: &str, owner: Identity, wasm: &[u8]) -> Result<DatabaseMeta, StoreError> {
        if !valid_name(name) {
            return Err(StoreError::InvalidName(name.into()));
        }
        let dir = self.database_dir(name);
        if dir.join("database").exists() {
            return Err(StoreError::Exists(name.into()));
        }
        if dir.exists() {
            // What a delete interrupted by a crash left: no old log may reach the new database.
            std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
        }
        use sha2::Digest;
        let module_hash = sha2::Sha256::digest(wasm).into();
        let meta = DatabaseMeta { name: name.into(), owner, module_hash, migrated_at: 0, tables: Vec::new() };
        let databases = self.root.join("databases");
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        std::fs::File::open(&databases).and_then(|d| d.sync_all()).map_err(io(&databases))?;
        write_atomic(&self.module_path(&meta), wasm)?;
        std::fs::create_dir_all(self.log(name)).map_err(io(&dir))?;
        write_atomic(&dir.join("database"), &encode_meta(&meta))?;
        Ok(meta)
    }

    /// Deletes database `name` and all its data. The database must not be running.
    /// Its record goes first (durably), so a crash part way leaves files that
    /// [`DataDir::list`] no longer shows and [`DataDir::create`] writes over.
    pub fn delete(&self, name: &str) -> Result<(), StoreError> {
        if !valid_name(name) {
            return Err(StoreError::InvalidName(name.into()));
        }
        let dir = self.database_dir(name);
        let record = dir.join("database");
        std::fs::remove_file(&record).map_err(io(&record))?;
        std::fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(io(&dir))?;
        std::fs::remove_dir_all(&dir).map_err(io(&dir))
    }

    /// The databases in the directory, by name.
    pub fn list(&self) -> Result<Vec<DatabaseMeta>, StoreError> {
        let dir = self.root.join("databases");
        if !dir.exists() {
            return Ok(Vec::new());
        }
        let mut metas = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let path = entry.map_err(io(&dir))?.path().join("database");
            if path.exists() {
                let bytes = std::fs::read(&path).map_err(io(&path))?;
                metas.push(
                    decode_meta(&bytes).map_err(|why| StoreError::Corrupt { path: path.clone(), why })?,
                );
            }
        }
        metas.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(metas)
    }

    fn module_path(&self, meta: &DatabaseMeta) -> PathBuf {
        let hash: String = meta.module_hash.iter().map(|b| format!("{b:02x}")).collect();
        self.database_dir(&meta.name).join(format!("module-{hash}.wasm"))
    }

    /// Where database `meta`'s module is: named by its hash, or `module.wasm` in a
    /// directory written before migrations.
    fn stored_module(&self, meta: &DatabaseMeta) -> PathBuf {
        let path = self.module_path(meta);
        let before_migrations = self.database_dir(&meta.name).join("module.wasm");
        if !path.exists() && before_migrations.exists() { before_migrations } else { path }
    }

    /// Records that database `meta` now runs module `wasm`, its tables migrated (in
    /// id order `tables`) and captured at `tick` in `snapshot` (see
    /// [`crate::snapshot::capture`]), which must be durable in the log up to `tick`.
    /// Returns the new record. See the module docs for the order of writes.
    pub fn migrate(
        &self,
        meta: &DatabaseMeta,
        wasm: &[u8],
        tables: Vec<String>,
        tick: u64,
        snapshot: &[u8],
    ) -> Result<DatabaseMeta, StoreError> {
        use sha2::Digest;
        let next = DatabaseMeta {
            module_hash: sha2::Sha256::digest(wasm).into(),
            migrated_at: tick,
            tables,
            ..meta.clone()
        };
        let name = &meta.name;
        let recover_error = |e: crate::snapshot::SnapshotError| StoreError::Recover {
            name: name.clone(),
            source: Box::new(RecoverError::Snapshot(e)),
        };
        write_atomic(&self.module_path(&next), wasm)?;
        let recorded = crate::snapshot::install(&self.snapshots(name), tick, snapshot)
            .map_err(recover_error)
            .and_then(|_| write_atomic(&self.database_dir(name).join("database"), &encode_meta(&next)));
        if let Err(e) = recorded {
            // Unless the new record reached the disk after all (its directory's sync
            // failed, say), the old one stands and the new module's file is of no use.
            let record = std::fs::read(self.database_dir(name).join("database")).ok();
            let on_disk = record.and_then(|bytes| decode_meta(&bytes).ok());
            if next.module_hash != meta.module_hash
                && on_disk.is_some_and(|m| m.module_hash == meta.module_hash)
            {
                let _ = std::fs::remove_file(self.module_path(&next));
            }
            return Err(e);
        }
        // The migration is recorded. The old module, older snapshots and the log
        // segments only they need hold the old tables' rows: of no use now, so a
        // failure to delete them is only reported.
        if next.module_hash != meta.module_hash {
            let old = self.stored_module(meta);
            if let Err(e) = std::fs::remove_file(&old) {
                eprintln!("tickdb: database `{name}`: deleting {}: {e}", old.display());
            }
        }
        if let Err(e) = crate::durability::prune(&self.snapshots(name), &self.log(name), 1) {
            eprintln!("tickdb: database `{name}`: pruning after the migration: {e}");
        }
        Ok(next)
    }

    /// The module of database `name`, checked against the recorded hash.
    pub fn module(&self, meta: &DatabaseMeta) -> Result<Vec<u8>, StoreError> {
        let path = self.stored_module(meta);
        let wasm = std::fs::read(&path).map_err(io(&path))?;
        use sha2::Digest;
        let hash: [u8; 32] = sha2::Sha256::digest(&wasm).into();
        if hash != meta.module_hash {
            return Err(StoreError::Corrupt {
                path,
                why: "the module does not match its recorded hash".into(),
            });
        }
        Ok(wasm)
    }

    /// Brings database `meta` back: loads its module (compiled from the cache),
    /// creates its tables and recovers them from its snapshots and log. The ticker
    /// keeps a log; open the sink at `recovered.end`.
    pub fn restore(
        &self,
        host: &ModuleHost,
        meta: &DatabaseMeta,
        config: EngineConfig,
        clock: Box<dyn Clock>,
        entropy: Box<dyn Entropy>,
    ) -> Result<Restored, StoreError> {
        let name = meta.name.clone();
        let wasm = self.module(meta)?;
        let module = host.load(&wasm).map_err(|source| StoreError::Module { name: name.clone(), source })?;
        let module_error = |source| StoreError::Module { name: name.clone(), source };
        let mut db = Database::new(config).map_err(|e| module_error(ModuleError::Engine(e)))?;
        // Tables take their ids in the recorded order (new ones go after it), so that
        // the log's table ids mean what they meant when it was written.
        for table in &meta.tables {
            let schema = module.def.table(table).ok_or_else(|| StoreError::Corrupt {
                path: self.database_dir(&name).join("database"),
                why: format!("it lists table `{table}`, which the module does not declare"),
            })?;
            db.create_table(schema.clone()).map_err(|e| module_error(ModuleError::Engine(e)))?;
        }
        let identity = database_identity(&meta.name);
        let system = ModuleSystem::new(host, Arc::clone(&module), &mut db, identity).map_err(module_error)?;
        let recovered = recover_from(&self.snapshots(&name), &self.log(&name), &mut db, meta.migrated_at)
            .map_err(|source| StoreError::Recover { name: name.clone(), source: Box::new(source) })?;
        let mut ticker = Ticker::new(db, system, clock, entropy);
        ticker.keep_log();
        Ok(Restored { meta: meta.clone(), module, ticker, recovered })
    }
}

/// A database brought back by [`DataDir::restore`], ready for its tick loop.
#[derive(Debug)]
pub struct Restored {
    pub meta: DatabaseMeta,
    pub module: Arc<LoadedModule>,
    pub ticker: Ticker<ModuleSystem>,
    pub recovered: Recovered,
}

/// A database's own identity (the caller of its tick systems and scheduled reducers):
/// derived from its name, so that it is the same after every restart.
pub fn database_identity(name: &str) -> Identity {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    hasher.update(b"tickdb database ");
    hasher.update(name.as_bytes());
    Identity(hasher.finalize().into())
}

fn encode_meta(meta: &DatabaseMeta) -> Vec<u8> {
    let mut out = META_MAGIC.to_vec();
    out.extend_from_slice(&(meta.name.len() as u32).to_le_bytes());
    out.extend_from_slice(meta.name.as_bytes());
    out.extend_from_slice(&meta.owner.0);
    out.extend_from_slice(&meta.module_hash);
    out.extend_from_slice(&meta.migrated_at.to_le_bytes());
    out.extend_from_slice(&(meta.tables.len() as u32).to_le_bytes());
    for table in &meta.tables {
        out.extend_from_slice(&(table.len() as u32).to_le_bytes());
        out.extend_from_slice(table.as_bytes());
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Reads a database record's fields in turn.
struct MetaReader<'a>(&'a [u8]);

impl<'a> MetaReader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let (head, tail) = self.0.split_at_checked(n).ok_or("too short")?;
        self.0 = tail;
        Ok(head)
    }

    fn u32(&mut self) -> Result<usize, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")) as usize)
    }

    fn string(&mut self) -> Result<String, String> {
        let len = self.u32()?;
        Ok(std::str::from_utf8(self.take(len)?).map_err(|_| "a name is not UTF-8")?.to_string())
    }
}

fn decode_meta(bytes: &[u8]) -> Result<DatabaseMeta, String> {
    let body = bytes.len().checked_sub(4).ok_or("too short")?;
    if crc32c::crc32c(&bytes[..body]) != u32::from_le_bytes(bytes[body..].try_into().expect("4 bytes")) {
        return Err("the checksum does not match".into());
    }
    let (rest, version) = match bytes[..body].split_at_checked(META_MAGIC.len()) {
        Some((magic, rest)) if magic == META_MAGIC => (rest, 2),
        Some((magic, rest)) if magic == META_MAGIC_V1 => (rest, 1),
        _ => return Err("bad magic".into()),
    };
    let mut r = MetaReader(rest);
    let name = r.string()?;
    let owner = Identity(r.take(32)?.try_into().expect("32 bytes"));
    let module_hash = r.take(32)?.try_into().expect("32 bytes");
    let (mut migrated_at, mut tables) = (0, Vec::new());
    if version > 1 {
        migrated_at = u64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"));
        tables = (0..r.u32()?).map(|_| r.string()).collect::<Result<Vec<_>, _>>()?;
    }
    if !r.0.is_empty() {
        return Err(format!("{} bytes after the record", r.0.len()));
    }
    Ok(DatabaseMeta { name, owner, module_hash, migrated_at, tables })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_records_from_before_migrations_still_read() {
        let meta = DatabaseMeta {
            name: "game".into(),
            owner: Identity([3; 32]),
            module_hash: [4; 32],
            migrated_at: 17,
            tables: vec!["player".into(), "guild".into()],
        };
        assert_eq!(decode_meta(&encode_meta(&meta)), Ok(meta.clone()));
        let mut v1 = META_MAGIC_V1.to_vec();
        v1.extend_from_slice(&4u32.to_le_bytes());
        v1.extend_from_slice(b"game");
        v1.extend_from_slice(&[3; 32]);
        v1.extend_from_slice(&[4; 32]);
        v1.extend_from_slice(&crc32c::crc32c(&v1).to_le_bytes());
        let old = DatabaseMeta { migrated_at: 0, tables: Vec::new(), ..meta.clone() };
        assert_eq!(decode_meta(&v1), Ok(old));
        let mut bad = encode_meta(&meta);
        bad[12] ^= 1;
        assert_eq!(decode_meta(&bad), Err("the checksum does not match".to_string()));
    }
}

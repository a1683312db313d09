//! A server's data directory: every database's name, owner and module, its snapshots
//! and its commit log, so that a restarted server brings each database back with no
//! action from the user.
//!
//! ```text
//! DATA/databases/NAME/database   name, owner and module hash, checksummed
//! DATA/databases/NAME/module.wasm
//! DATA/databases/NAME/snapshots/
//! DATA/databases/NAME/log/
//! DATA/module-cache/             compiled modules
//! ```
//!
//! Every file is written to a temporary name, synced, renamed into place and the
//! directory synced.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tickdb_wasm_abi::Identity;

use crate::config::EngineConfig;
use crate::db::Database;
use crate::durability::{RecoverError, Recovered, recover};
use crate::host::{LoadedModule, ModuleError, ModuleHost, ModuleSystem};
use crate::tick::{Clock, Entropy, Ticker};

const META_MAGIC: &[u8; 8] = b"TDBMETA1";

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
        let meta = DatabaseMeta { name: name.into(), owner, module_hash: sha2::Sha256::digest(wasm).into() };
        let databases = self.root.join("databases");
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        std::fs::File::open(&databases).and_then(|d| d.sync_all()).map_err(io(&databases))?;
        write_atomic(&dir.join("module.wasm"), wasm)?;
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

    /// The module of database `name`, checked against the recorded hash.
    pub fn module(&self, meta: &DatabaseMeta) -> Result<Vec<u8>, StoreError> {
        let path = self.database_dir(&meta.name).join("module.wasm");
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
        let identity = database_identity(&meta.name);
        let system = ModuleSystem::new(host, Arc::clone(&module), &mut db, identity).map_err(module_error)?;
        let recovered = recover(&self.snapshots(&name), &self.log(&name), &mut db)
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
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn decode_meta(bytes: &[u8]) -> Result<DatabaseMeta, String> {
    let body = bytes.len().checked_sub(4).ok_or("too short")?;
    if crc32c::crc32c(&bytes[..body]) != u32::from_le_bytes(bytes[body..].try_into().expect("4 bytes")) {
        return Err("the checksum does not match".into());
    }
    let bytes = &bytes[..body];
    let rest = bytes.strip_prefix(META_MAGIC.as_slice()).ok_or("bad magic")?;
    let (len, rest) = rest.split_at_checked(4).ok_or("too short")?;
    let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
    let (name, rest) = rest.split_at_checked(len).ok_or("too short")?;
    let name = std::str::from_utf8(name).map_err(|_| "the name is not UTF-8")?.to_string();
    if rest.len() != 64 {
        return Err(format!("{} bytes where 64 belong", rest.len()));
    }
    let owner = Identity(rest[..32].try_into().expect("32 bytes"));
    let module_hash = rest[32..].try_into().expect("32 bytes");
    Ok(DatabaseMeta { name, owner, module_hash })
}

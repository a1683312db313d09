//! The CLI's config file: the identity and token it acts as on each server, so that
//! successive commands act as the same owner. JSON, at `$TICKDB_CONFIG` or the
//! per-user config directory (`~/.config/tickdb/cli.json` on Linux).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::CliError;

/// One server's identity.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Credentials {
    pub identity: String,
    pub token: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Config {
    /// By server address (`http://127.0.0.1:3000`).
    #[serde(default)]
    pub servers: BTreeMap<String, Credentials>,
    #[serde(skip)]
    path: PathBuf,
}

impl Config {
    /// The default path: `$TICKDB_CONFIG`, else the per-user config directory.
    pub fn default_path() -> PathBuf {
        if let Some(path) = std::env::var_os("TICKDB_CONFIG") {
            return PathBuf::from(path);
        }
        dirs::config_dir().unwrap_or_else(|| PathBuf::from(".")).join("tickdb").join("cli.json")
    }

    /// Reads the config at `path`; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<Config, CliError> {
        let mut config = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                CliError::new(format!("the config file {} is not valid: {e}", path.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Config::default(),
            Err(e) => return Err(CliError::new(format!("reading {}: {e}", path.display()))),
        };
        config.path = path.to_path_buf();
        Ok(config)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the config, readable by the user only (it holds tokens).
    pub fn save(&self) -> Result<(), CliError> {
        let write = || -> std::io::Result<()> {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = self.path.with_extension("json.tmp");
            let json = serde_json::to_vec_pretty(self).expect("the config serializes");
            {
                use std::os::unix::fs::OpenOptionsExt;
                // A new file, so that its mode is ours even if a stale one was left.
                let _ = std::fs::remove_file(&tmp);
                let mut file =
                    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
                std::io::Write::write_all(&mut file, &json)?;
                file.sync_all()?;
            }
            std::fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| CliError::new(format!("writing the config file {}: {e}", self.path.display())))
    }
}

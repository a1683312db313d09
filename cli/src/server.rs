//! `tickdb start` (a server until interrupted) and `tickdb dev` (build, publish, and
//! publish again on every change to the project, with a server of its own when none is
//! running).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use tickdb_engine::store::DataDir;

use crate::api::{Api, normalize};
use crate::{CliError, Conn, commands, project};

/// The per-user data directory: `~/.local/share/tickdb` on Linux.
fn default_data_dir() -> PathBuf {
    dirs::data_dir().unwrap_or_else(|| PathBuf::from(".")).join("tickdb")
}

fn start_server(
    listen: &str,
    data_dir: Option<PathBuf>,
    config: tickdb_net::ServerConfig,
) -> Result<(tickdb_net::ServerHandle, PathBuf), CliError> {
    let addr: SocketAddr = listen.parse().map_err(|e| {
        CliError::new(format!("`{listen}` is not an address to listen on (like 127.0.0.1:3000): {e}"))
    })?;
    let dir = data_dir.unwrap_or_else(default_data_dir);
    std::fs::create_dir_all(&dir)
        .map_err(|e| CliError::new(format!("the data directory {}: {e}", dir.display())))?;
    // Each database comes back from its snapshot and log first: for a large log, a while.
    let progress = crate::spinner(format!("starting: restoring the databases in {}", dir.display()));
    let server = tickdb_net::start(config, DataDir::new(&dir), addr);
    progress.finish_and_clear();
    let server = server.map_err(|e| CliError::new(format!("starting the server on {addr}: {e}")))?;
    Ok((server, dir))
}

/// A channel that receives once when the process is asked to stop (Ctrl-C, SIGTERM).
fn interrupted() -> Result<mpsc::Receiver<()>, CliError> {
    let (tx, rx) = mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = tx.send(());
    })
    .map_err(|e| CliError::new(format!("handling Ctrl-C: {e}")))?;
    Ok(rx)
}

/// Limits `tickdb start` can change from the server's defaults.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Messages one client may send per second (bursts of twice as many).
    pub client_messages_per_second: Option<u32>,
}

impl Limits {
    fn config(self) -> tickdb_net::ServerConfig {
        let mut config = tickdb_net::ServerConfig::default();
        if let Some(n) = self.client_messages_per_second {
            config.messages_per_second_max = n;
            config.messages_burst_max = n.saturating_mul(2);
        }
        config
    }
}

pub fn start(listen: &str, data_dir: Option<PathBuf>, limits: Limits) -> Result<(), CliError> {
    let stop = interrupted()?;
    let (server, dir) = start_server(listen, data_dir, limits.config())?;
    println!("tickdb listening on http://{}, data in {}", server.addr(), dir.display());
    println!("stop with Ctrl-C");
    let _ = stop.recv();
    eprintln!("stopping: finishing queued work and syncing the logs");
    server.stop();
    Ok(())
}

/// The files of a project whose change means a rebuild, with their modification times.
fn sources(project: &Path) -> BTreeMap<PathBuf, SystemTime> {
    let mut files = BTreeMap::new();
    let mut dirs = vec![project.join("src")];
    for file in ["Cargo.toml", "build.rs"] {
        if let Ok(m) = std::fs::metadata(project.join(file)) {
            files.insert(project.join(file), m.modified().unwrap_or(SystemTime::UNIX_EPOCH));
        }
    }
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            match entry.metadata() {
                Ok(m) if m.is_dir() => dirs.push(path),
                Ok(m) => {
                    files.insert(path, m.modified().unwrap_or(SystemTime::UNIX_EPOCH));
                }
                Err(_) => {}
            }
        }
    }
    files
}

/// How often `dev` looks for changed sources.
const WATCH_INTERVAL: Duration = Duration::from_millis(300);

pub fn dev(
    project: &Path,
    name: Option<String>,
    data_dir: Option<PathBuf>,
    clear: bool,
    conn: &Conn,
) -> Result<(), CliError> {
    let project = project
        .canonicalize()
        .map_err(|e| CliError::new(format!("the project {}: {e}", project.display())))?;
    let name = match name {
        Some(name) => name,
        None => project
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("module")
            .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_', "-"),
    };
    let stop = interrupted()?;
    let mut api = conn.api()?;
    // A server of our own when none answers at the address.
    let _server = match api.request("GET", "/v1/database", None, &[]) {
        Ok(_) => {
            println!("using the tickdb server at {}", api.server);
            if data_dir.is_some() {
                println!("(--data-dir is for a server `dev` starts; this one keeps its own)");
            }
            None
        }
        Err(_) => {
            let listen = normalize(&conn.server).trim_start_matches("http://").to_string();
            let (server, dir) = start_server(&listen, data_dir, tickdb_net::ServerConfig::default())?;
            println!("started a tickdb server on http://{}, data in {}", server.addr(), dir.display());
            api = Api::new(&format!("http://{}", server.addr()), api.config_owned());
            Some(server)
        }
    };
    let mut seen = sources(&project);
    let mut first = true;
    let mut log_next: Option<u64> = None;
    loop {
        match build_and_publish(&mut api, &project, &name, clear && first) {
            Ok(()) => println!("watching {} for changes; Ctrl-C to stop", project.display()),
            Err(e) => eprintln!("error: {e}\nwatching {} for a fix; Ctrl-C to stop", project.display()),
        }
        first = false;
        loop {
            if stop.recv_timeout(WATCH_INTERVAL).is_ok() {
                return Ok(());
            }
            log_next = print_new_logs(&mut api, &name, log_next);
            let now = sources(&project);
            if now != seen {
                seen = now;
                println!("change in {}: building and publishing again", project.display());
                break;
            }
        }
    }
}

fn build_and_publish(api: &mut Api, project: &Path, name: &str, clear: bool) -> Result<(), CliError> {
    let wasm = project::build(project)?;
    let bytes = std::fs::read(&wasm).map_err(|e| CliError::new(format!("{}: {e}", wasm.display())))?;
    commands::publish(api, name, &bytes, clear, false)
}

/// Prints the module's log lines after `next` (all lines of the last publish at first);
/// returns where to go on from.
fn print_new_logs(api: &mut Api, name: &str, next: Option<u64>) -> Option<u64> {
    let path = match next {
        Some(next) => format!("/v1/database/{name}/logs?after={next}"),
        None => format!("/v1/database/{name}/logs?n=0"),
    };
    let answer = api.authed("GET", &path, &[]).ok().filter(|r| r.status == 200)?.json().ok()?;
    for line in answer["lines"].as_array().into_iter().flatten() {
        println!(
            "log: {} {}",
            line["level"].as_str().unwrap_or("?"),
            line["message"].as_str().unwrap_or_default()
        );
    }
    answer["next"].as_u64().or(next)
}

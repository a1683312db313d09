//! `tickdb`: the command line for tickdb. It runs the server (`start`, `dev`), makes
//! and builds module projects (`init`, `build`), publishes them, talks to databases
//! through the HTTP API and the WebSocket protocol (`call`, `sql`, `subscribe`, `logs`,
//! `describe`, `list`, `delete`), keeps the user's identity per server (`identity`),
//! and generates client bindings (`generate`). `docs/cli.md` documents every command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

mod api;
mod commands;
mod config;
mod generate;
mod loadtest;
mod project;
mod server;

/// A failed command: the message the user reads.
#[derive(Debug)]
pub struct CliError(String);

impl CliError {
    pub fn new(message: impl Into<String>) -> CliError {
        CliError(message.into())
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A spinner on stderr for work that takes a while; hidden when stderr is not a terminal.
pub fn spinner(message: String) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner().with_message(message);
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

#[derive(Debug, Parser)]
#[command(
    name = "tickdb",
    version,
    about = "tickdb: the database that is also the game server",
    max_term_width = 100
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the server is and who the CLI is on it.
#[derive(Debug, Clone, Args)]
struct Conn {
    /// The server's address.
    #[arg(long, short = 's', env = "TICKDB_SERVER", default_value = "http://127.0.0.1:3000")]
    server: String,
    /// The config file holding the identity used on each server.
    #[arg(long, env = "TICKDB_CONFIG")]
    config: Option<PathBuf>,
}

/// Where a module comes from.
#[derive(Debug, Clone, Args)]
#[group(multiple = false)]
struct ModuleSource {
    /// The module project to build (default: the current directory).
    #[arg(long, short = 'p')]
    project_path: Option<PathBuf>,
    /// A built module instead of a project.
    #[arg(long)]
    wasm: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a server until interrupted.
    Start {
        /// The address to listen on.
        #[arg(long, default_value = "127.0.0.1:3000")]
        listen: String,
        /// Where databases are kept (default: the per-user data directory, e.g.
        /// ~/.local/share/tickdb).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Messages one client may send per second, on average (bursts of twice as
        /// many); a client past it is disconnected [default: 1000].
        #[arg(long, value_name = "N")]
        client_messages_per_second: Option<u32>,
    },
    /// Create a module project from a template.
    Init {
        /// The module's language (only `rust`).
        #[arg(long, default_value = "rust")]
        lang: String,
        /// The new project's directory.
        dir: PathBuf,
        /// The tickdb module SDK the project depends on (default: the one in the
        /// checkout this CLI was built from).
        #[arg(long)]
        sdk_path: Option<PathBuf>,
    },
    /// Build a module project to WebAssembly.
    Build {
        /// The project (default: the current directory).
        #[arg(long, short = 'p', default_value = ".")]
        project_path: PathBuf,
    },
    /// Build (unless --wasm) and publish a module into database NAME.
    Publish {
        /// The database.
        name: String,
        #[command(flatten)]
        source: ModuleSource,
        /// Delete the database's data and start afresh, instead of migrating it.
        #[arg(long)]
        clear: bool,
        /// Print JSON, for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Call a reducer; each argument is a JSON value (strings in quotes: '"Bo"').
    Call {
        /// The database.
        name: String,
        /// The reducer.
        reducer: String,
        /// Its arguments, one JSON value each.
        args: Vec<String>,
        /// Print JSON, for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Run an SQL query and print the rows; without a query, an interactive shell.
    Sql {
        /// The database.
        name: String,
        /// The query (none: read statements from stdin, one per line).
        query: Option<String>,
        /// Print JSON, for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Subscribe to queries; print the initial rows and each update as JSON lines.
    Subscribe {
        /// The database.
        name: String,
        /// The queries, subscribed to as one set.
        #[arg(required = true)]
        queries: Vec<String>,
        /// Stop after this many updates (0: after the initial rows).
        #[arg(long, short = 'n')]
        num_updates: Option<u64>,
        /// Stop after this many seconds.
        #[arg(long, short = 't')]
        timeout: Option<f64>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print a database's module log (owner only).
    Logs {
        /// The database.
        name: String,
        /// Keep printing new lines as they come.
        #[arg(long, short = 'f')]
        follow: bool,
        /// How many of the last lines.
        #[arg(long, short = 'n', default_value_t = 20)]
        num_lines: u64,
        /// Print JSON, for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show a database's tables and reducers.
    Describe {
        /// The database.
        name: String,
        /// Print JSON, for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// List the server's databases.
    List {
        /// Print JSON, for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete a database and its data (owner only).
    Delete {
        /// The database.
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// The identity this CLI acts as on a server.
    Identity {
        #[command(subcommand)]
        action: IdentityAction,
    },
    /// Generate client bindings for a module.
    Generate {
        /// The bindings' language (only `rust`).
        #[arg(long, default_value = "rust")]
        lang: String,
        /// Where to write them (`mod.rs`).
        #[arg(long, short = 'o')]
        out_dir: PathBuf,
        #[command(flatten)]
        source: ModuleSource,
        /// Or a published database's module.
        name: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Run simulated players against a database and report what they measured.
    Loadtest {
        #[command(flatten)]
        plan: loadtest::Plan,
        #[command(flatten)]
        conn: Conn,
    },
    /// Build, publish and republish on every change; starts a server if none runs.
    Dev {
        /// The project (default: the current directory).
        #[arg(long, short = 'p', default_value = ".")]
        project_path: PathBuf,
        /// The database (default: the project directory's name).
        #[arg(long)]
        name: Option<String>,
        /// Where the server started by `dev` keeps its data.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Delete the database's data on the first publish.
        #[arg(long)]
        clear: bool,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Debug, Subcommand)]
enum IdentityAction {
    /// Make a new identity on the server and use it from now on.
    New {
        #[command(flatten)]
        conn: Conn,
    },
    /// Show the identity used on the server.
    Show {
        /// Print the token too.
        #[arg(long)]
        token: bool,
        /// Print JSON, for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

impl Conn {
    fn api(&self) -> Result<api::Api, CliError> {
        let path = self.config.clone().unwrap_or_else(config::Config::default_path);
        Ok(api::Api::new(&self.server, config::Config::load(&path)?))
    }
}

impl ModuleSource {
    /// The module's bytes: read, or built from the project.
    fn wasm(&self) -> Result<Vec<u8>, CliError> {
        let path = match (&self.wasm, &self.project_path) {
            (Some(wasm), _) => wasm.clone(),
            (None, project) => project::build(project.as_deref().unwrap_or(std::path::Path::new(".")))?,
        };
        std::fs::read(&path).map_err(|e| CliError::new(format!("{}: {e}", path.display())))
    }
}

fn run(command: Command) -> Result<(), CliError> {
    match command {
        Command::Start { listen, data_dir, client_messages_per_second } => {
            server::start(&listen, data_dir, server::Limits { client_messages_per_second })
        }
        Command::Init { lang, dir, sdk_path } => {
            check_lang(&lang)?;
            project::init(&dir, &sdk_path.unwrap_or_else(project::sdk_path))?;
            println!("created a Rust module project in {}", dir.display());
            println!(
                "next: `tickdb start` in another terminal, then `tickdb publish NAME -p {}`",
                dir.display()
            );
            Ok(())
        }
        Command::Build { project_path } => {
            let wasm = project::build(&project_path)?;
            let size = std::fs::metadata(&wasm).map(|m| m.len()).unwrap_or(0);
            println!("built {} ({} KB)", wasm.display(), size / 1024);
            Ok(())
        }
        Command::Publish { name, source, clear, json, conn } => {
            let wasm = source.wasm()?;
            commands::publish(&mut conn.api()?, &name, &wasm, clear, json)
        }
        Command::Call { name, reducer, args, json, conn } => {
            commands::call(&mut conn.api()?, &name, &reducer, &args, json)
        }
        Command::Sql { name, query, json, conn } => {
            commands::sql(&mut conn.api()?, &name, query.as_deref(), json)
        }
        Command::Subscribe { name, queries, num_updates, timeout, conn } => {
            let timeout = timeout.map(Duration::from_secs_f64);
            commands::subscribe(&mut conn.api()?, &name, &queries, num_updates, timeout)
        }
        Command::Logs { name, follow, num_lines, json, conn } => {
            commands::logs(&mut conn.api()?, &name, follow, num_lines, json)
        }
        Command::Describe { name, json, conn } => commands::describe(&conn.api()?, &name, json),
        Command::List { json, conn } => commands::list(&conn.api()?, json),
        Command::Delete { name, conn } => commands::delete(&mut conn.api()?, &name),
        Command::Identity { action: IdentityAction::New { conn } } => {
            let mut api = conn.api()?;
            let c = api.new_identity()?;
            println!(
                "new identity {} on {}, saved in {}",
                c.identity,
                api.server,
                api.config().path().display()
            );
            Ok(())
        }
        Command::Identity { action: IdentityAction::Show { token, json, conn } } => {
            commands::identity_show(&conn.api()?, token, json)
        }
        Command::Generate { lang, out_dir, source, name, conn } => {
            check_lang(&lang)?;
            let def = match (&name, &source.wasm, &source.project_path) {
                (Some(name), None, None) => commands::module_def(&conn.api()?, name)?,
                (Some(_), _, _) => {
                    return Err(CliError::new(
                        "give a database NAME, or --wasm, or --project-path, not several",
                    ));
                }
                (None, _, _) => project::module_def(&source.wasm()?)?,
            };
            let file = out_dir.join("mod.rs");
            std::fs::create_dir_all(&out_dir)
                .map_err(|e| CliError::new(format!("{}: {e}", out_dir.display())))?;
            std::fs::write(&file, generate::rust(&def))
                .map_err(|e| CliError::new(format!("{}: {e}", file.display())))?;
            println!(
                "wrote {} ({} tables, {} reducers)",
                file.display(),
                def.tables.len(),
                def.reducers.len()
            );
            Ok(())
        }
        Command::Loadtest { plan, conn } => loadtest::run(&conn.api()?, &plan),
        Command::Dev { project_path, name, data_dir, clear, conn } => {
            server::dev(&project_path, name, data_dir, clear, &conn)
        }
    }
}

fn check_lang(lang: &str) -> Result<(), CliError> {
    match lang {
        "rust" => Ok(()),
        other => Err(CliError::new(format!("`{other}` is not supported yet; the languages are: rust"))),
    }
}

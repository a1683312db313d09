//! The chat's terminal client, built on the tickdb client SDK and the bindings
//! `tickdb generate` wrote for the chat module (`src/bindings`).
//!
//! It connects (as the identity of the saved token, or a new one it then saves),
//! subscribes to the users and messages, prints the last messages, then every new
//! message and every user coming online, going offline or changing name, as they
//! arrive. Each line typed is sent as a message; `/name NAME` sets the name and
//! `/quit` leaves. Messages are applied on a background thread (`run_threaded`);
//! a game would call `frame_tick` once per frame instead.
//!
//! `cargo run -p tickdb-example-chat-client -- --server http://127.0.0.1:3000`

use std::io::BufRead;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::Duration;

use clap::Parser;
use tickdb_sdk::{DbConnection, EventContext, Identity};

#[rustfmt::skip]
mod bindings;

use bindings::{Message, RemoteReducers, Tables, User};

#[derive(Debug, Parser)]
#[command(about = "The tickdb quickstart chat, in the terminal")]
struct Args {
    /// The tickdb server.
    #[arg(long, env = "TICKDB_SERVER", default_value = "http://127.0.0.1:3000")]
    server: String,
    /// The chat database's name.
    #[arg(long, default_value = "chat")]
    database: String,
    /// Where the identity's token is kept (default: the per-user config directory).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Set this name once connected.
    #[arg(long)]
    name: Option<String>,
    /// How many earlier messages to show.
    #[arg(long, default_value_t = 20)]
    history: usize,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let token_file = args.token_file.clone().unwrap_or_else(|| {
        dirs::config_dir().unwrap_or_else(|| PathBuf::from(".")).join("tickdb").join("chat-client.token")
    });
    let token = std::fs::read_to_string(&token_file).ok().map(|t| t.trim().to_string());
    let (ready, connected) = mpsc::channel();
    let conn = DbConnection::builder(bindings::tables())
        .with_uri(&args.server)
        .with_database_name(&args.database)
        .with_token(token)
        .on_connect(move |_, identity, token| {
            if let Some(dir) = token_file.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            if let Err(e) = std::fs::write(&token_file, token) {
                eprintln!("(could not save the token in {}: {e})", token_file.display());
            }
            let _ = ready.send(identity);
        })
        .on_disconnect(|_, why| match why {
            Some(e) => eprintln!("* {e}; reconnecting"),
            None => eprintln!("* disconnected"),
        })
        .on_error(|_, e| eprintln!("* error: {e}"))
        .build()?;
    register_callbacks(&conn);
    let history = args.history;
    conn.subscription_builder()
        .on_applied(move |ctx| print_history(ctx, history))
        .on_error(|_, e| eprintln!("* subscription failed: {e}"))
        .subscribe(["SELECT * FROM user", "SELECT * FROM message"]);
    let worker = conn.run_threaded();
    let me = connected.recv()?;
    println!("* connected as {}", short(me));
    let pending = Pending::default();
    if let Some(name) = args.name {
        conn.reducers().set_name_then(name, pending.report("set the name"))?;
    }
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let line = line.trim();
        if line == "/quit" {
            break;
        }
        let sent = match line.strip_prefix("/name ") {
            Some(name) => conn.reducers().set_name_then(name.to_string(), pending.report("set the name")),
            None if line.is_empty() => continue,
            None => conn.reducers().send_message_then(line.to_string(), pending.report("send")),
        };
        if let Err(e) = sent {
            pending.done();
            eprintln!("* {e}");
        }
    }
    // Leave once the calls made have their results (or after 5 s).
    pending.wait(Duration::from_secs(5));
    conn.disconnect();
    let _ = worker.join();
    Ok(())
}

/// Calls waiting for their results.
#[derive(Debug, Clone, Default)]
struct Pending(Arc<(Mutex<usize>, Condvar)>);

impl Pending {
    /// Counts a call, and returns the callback that reports its error and uncounts it.
    fn report(
        &self,
        what: &'static str,
    ) -> impl FnOnce(&EventContext<'_>, Result<(), String>) + Send + 'static {
        *self.0.0.lock().expect("not poisoned") += 1;
        let pending = self.clone();
        move |_, result| {
            if let Err(e) = result {
                eprintln!("* could not {what}: {e}");
            }
            pending.done();
        }
    }

    fn done(&self) {
        let mut count = self.0.0.lock().expect("not poisoned");
        *count = count.saturating_sub(1);
        self.0.1.notify_all();
    }

    fn wait(&self, timeout: Duration) {
        let count = self.0.0.lock().expect("not poisoned");
        let _ = self.0.1.wait_timeout_while(count, timeout, |count| *count > 0);
    }
}

fn register_callbacks(conn: &DbConnection) {
    conn.db().message().on_insert(|ctx, message| {
        // The history is printed once the subscription applies; after that, each
        // new message as it comes.
        if !matches!(ctx.event, tickdb_sdk::Event::SubscribeApplied { .. }) {
            print_message(ctx, message);
        }
    });
    conn.db().user().on_update(|_, old, new| {
        if old.name != new.name {
            println!("* {} is now called {}", name_or_id(old), name_or_id(new));
        }
        if old.online != new.online {
            println!("* {} is {}", name_or_id(new), if new.online { "online" } else { "offline" });
        }
    });
    conn.db().user().on_insert(|ctx, user| {
        if user.online && !matches!(ctx.event, tickdb_sdk::Event::SubscribeApplied { .. }) {
            println!("* {} joined", name_or_id(user));
        }
    });
}

fn print_history(ctx: &EventContext<'_>, count: usize) {
    let mut messages: Vec<Message> = ctx.db().message().iter().collect();
    messages.sort_by_key(|m| m.sent);
    let skip = messages.len().saturating_sub(count);
    for message in &messages[skip..] {
        print_message(ctx, message);
    }
    let online = ctx.db().user().iter().filter(|u| u.online).count();
    println!("* {online} online");
}

fn print_message(ctx: &EventContext<'_>, message: &Message) {
    let sender = ctx.db().user().identity().find(&message.sender);
    let name = sender.as_ref().map_or_else(|| short(message.sender), name_or_id);
    println!("{name}: {}", message.text);
}

fn name_or_id(user: &User) -> String {
    user.name.clone().unwrap_or_else(|| short(user.identity))
}

/// The first 8 hex digits of an identity.
fn short(identity: Identity) -> String {
    identity.to_string()[..8].to_string()
}

//! A headless client of the MMO example, the way a game client uses tickdb: a frame
//! loop that calls `frame_tick`, moves the player, and keeps an area-of-interest
//! subscription (players and NPCs in a square around the player) that follows it.
//! Once a second it draws what it sees as text: `@` the player, `P` other players,
//! `n` NPCs, `x` the dead; and a status line.
//!
//! `cargo run -p tickdb-example-mmo-client -- --name Ada --seconds 10`
//! (with the module published as `mmo`: `tickdb publish mmo -p examples/mmo`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use tickdb_sdk::{DbConnection, Identity, SubscriptionHandle};

#[rustfmt::skip]
mod bindings;

use bindings::{RemoteReducers, Tables};

#[derive(Debug, Parser)]
#[command(about = "A headless client of the tickdb MMO example")]
struct Args {
    #[arg(long, env = "TICKDB_SERVER", default_value = "http://127.0.0.1:3000")]
    server: String,
    #[arg(long, default_value = "mmo")]
    database: String,
    #[arg(long, default_value = "wanderer")]
    name: String,
    /// Stop after this many seconds (default: run until killed).
    #[arg(long)]
    seconds: Option<f64>,
    /// Half the side of the area of interest, in world units.
    #[arg(long, default_value_t = 32.0)]
    radius: f32,
    /// Moves per second.
    #[arg(long, default_value_t = 10.0)]
    move_hz: f64,
}

/// The area of interest: a square around `center`, and its subscription.
struct Interest {
    center: (f32, f32),
    handle: SubscriptionHandle,
}

fn subscribe_around(conn: &DbConnection, (x, y): (f32, f32), radius: f32) -> Interest {
    let window = format!(
        "x BETWEEN {} AND {} AND y BETWEEN {} AND {}",
        x - radius,
        x + radius,
        y - radius,
        y + radius
    );
    let handle =
        conn.subscription_builder().on_error(|_, e| eprintln!("area of interest refused: {e}")).subscribe([
            format!("SELECT * FROM player WHERE {window}"),
            format!("SELECT * FROM npc WHERE {window}"),
        ]);
    Interest { center: (x, y), handle }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let conn = DbConnection::builder(bindings::tables())
        .with_uri(&args.server)
        .with_database_name(&args.database)
        .on_error(|_, e| eprintln!("error: {e}"))
        .build()?;
    let joined = Arc::new(Mutex::new(None));
    let j = Arc::clone(&joined);
    conn.reducers()
        .join_then(args.name.clone(), move |_, result| *j.lock().expect("not poisoned") = Some(result))?;
    let started = Instant::now();
    while conn.identity().is_none() {
        if started.elapsed() > Duration::from_secs(10) {
            return Err("the server did not say who we are within 10 s".into());
        }
        conn.frame_tick_wait(Duration::from_millis(20));
    }
    let me = conn.identity().expect("known now");
    // The player's own row wherever it goes, its inventory (the only one it may
    // read) and the chat; the area of interest comes once the player is in the world.
    conn.subscription_builder().on_error(|_, e| eprintln!("subscription refused: {e}")).subscribe([
        format!("SELECT * FROM player WHERE identity = '{me}'"),
        "SELECT * FROM inventory".into(),
        "SELECT * FROM zone_chat".into(),
    ]);
    while joined.lock().expect("not poisoned").is_none() || conn.db().player().identity().find(&me).is_none()
    {
        if started.elapsed() > Duration::from_secs(10) {
            return Err("could not join the world within 10 s".into());
        }
        if let Some(Err(e)) = joined.lock().expect("not poisoned").as_ref() {
            return Err(format!("joining: {e}").into());
        }
        conn.frame_tick_wait(Duration::from_millis(20));
    }
    run(&conn, &args, me)
}

fn run(conn: &DbConnection, args: &Args, me: Identity) -> Result<(), Box<dyn std::error::Error>> {
    let position = || conn.db().player().identity().find(&me).map(|p| (p.x, p.y));
    let mut interest = subscribe_around(conn, position().unwrap_or_default(), args.radius);
    let (mut heading, mut seed) = (0.0f32, 0x9e37_79b9_7f4a_7c15u64);
    let step = Duration::from_secs_f64(1.0 / args.move_hz);
    let (started, mut next_move, mut next_draw) = (Instant::now(), Instant::now(), Instant::now());
    while args.seconds.is_none_or(|s| started.elapsed().as_secs_f64() < s) {
        conn.frame_tick_wait(Duration::from_millis(10));
        let now = Instant::now();
        if now >= next_move {
            next_move = now + step;
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            heading += ((seed % 1000) as f32 / 1000.0 - 0.5) * 0.8;
            if let Some((x, y)) = position() {
                let (nx, ny) = (
                    (x + heading.cos() * 2.0).clamp(1.0, 1022.0),
                    (y + heading.sin() * 2.0).clamp(1.0, 1022.0),
                );
                if nx <= 1.0 || nx >= 1022.0 || ny <= 1.0 || ny >= 1022.0 {
                    heading += std::f32::consts::PI;
                }
                conn.reducers().move_to(nx, ny, heading)?;
                // The area of interest follows once the player strays from its center.
                let (cx, cy) = interest.center;
                if (nx - cx).abs() > args.radius / 2.0 || (ny - cy).abs() > args.radius / 2.0 {
                    let next = subscribe_around(conn, (nx, ny), args.radius);
                    std::mem::replace(&mut interest, next).handle.unsubscribe();
                }
            }
        }
        if now >= next_draw {
            next_draw = now + Duration::from_secs(1);
            println!("{}", draw(conn, me, &interest, args.radius));
        }
    }
    conn.disconnect();
    conn.frame_tick_wait(Duration::from_secs(1));
    Ok(())
}

/// What the player sees, as text.
fn draw(conn: &DbConnection, me: Identity, interest: &Interest, radius: f32) -> String {
    const W: usize = 32;
    const H: usize = 16;
    let Some(me) = conn.db().player().identity().find(&me) else { return "(not in the world)".into() };
    let (cx, cy) = interest.center;
    let mut grid = vec![vec!['.'; W]; H];
    let mut plot = |x: f32, y: f32, c: char| {
        let col = ((x - (cx - radius)) / (2.0 * radius) * W as f32).floor();
        let row = ((y - (cy - radius)) / (2.0 * radius) * H as f32).floor();
        if (0.0..W as f32).contains(&col) && (0.0..H as f32).contains(&row) {
            grid[row as usize][col as usize] = c;
        }
    };
    let npcs: Vec<_> = conn.db().npc().iter().collect();
    npcs.iter().for_each(|n| plot(n.x, n.y, 'n'));
    let players: Vec<_> = conn.db().player().iter().collect();
    for p in &players {
        plot(
            p.x,
            p.y,
            if !p.alive {
                'x'
            } else if p.identity == me.identity {
                '@'
            } else {
                'P'
            },
        );
    }
    let items: Vec<String> =
        conn.db().inventory().iter().map(|i| format!("{} {}", i.count, i.item)).collect();
    let chat =
        conn.db().zone_chat().iter().filter(|c| c.zone == me.zone).max_by_key(|c| c.id).map(|c| c.text);
    let mut out = format!(
        "{} hp {} at ({:.0}, {:.0}) zone {}: {} players, {} NPCs in sight; carrying {}; chat: {}\n",
        me.name,
        me.hp,
        me.x,
        me.y,
        me.zone,
        players.len(),
        npcs.len(),
        items.join(", "),
        chat.as_deref().unwrap_or("-")
    );
    for row in grid {
        out.extend(row);
        out.push('\n');
    }
    out
}
